"""CLI of compare, fit, gpus --fits and estimate's new options (status, margin, budget, run files, csv)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vramcalc.cli.app import app
from vramcalc.core.margin import MARGIN_SOURCE_DEFAULT
from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# nvidia-smi totals (presets/gpus.yaml): RTX 4090 24,564 MiB; A100 80GB 81,920 MiB.
RTX4090_BYTES = 25_757_220_864
A100_80_BYTES = 85_899_345_920


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.delenv("NO_COLOR", raising=False)


def run_json(*args: str, code: int = 0) -> Any:
    result = runner.invoke(app, [*args, "--format", "json"])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def test_estimate_keeps_its_keys_and_adds_status_and_margin() -> None:
    doc = run_json("estimate", "mistral-7b", "--method", "qlora", "--gpu", "rtx4090")
    assert doc["fits"] is True and doc["status"] == "FITS"
    # The peak is the core's (memory.estimate, QLoRA Mistral-7B, batch 1 × 512); the default margin is
    # 7 % of it rounded up (margin.py: the measured error band vs the tracer).
    peak = estimate(presets.find_model("mistral-7b"), TrainingSpec(method="qlora")).peak_bytes
    assert doc["peak_bytes"] == peak
    assert doc["margin"] == {"fraction": 0.07, "bytes": -(-peak * 7 // 100), "source": MARGIN_SOURCE_DEFAULT}
    assert doc["headroom_bytes"] == RTX4090_BYTES - peak


def test_estimate_tight_with_a_larger_margin() -> None:
    # 17,259,096,939 B headroom is 203 % of the 8,498,123,925 B peak: TIGHT only under a margin above that.
    # --no-kbit-prep: the 16-bit norms/embeddings/lm_head these numbers were taken with.
    doc = run_json("estimate", "mistral-7b", "--method", "qlora", "--no-kbit-prep", "--gpu", "rtx4090",
                   "--margin", "0.5")
    assert doc["status"] == "FITS" and doc["margin"]["source"] == "--margin 0.5"
    result = runner.invoke(
        app, ["estimate", "mistral-7b", "--method", "qlora", "--no-kbit-prep", "--max-memory", "8.9GB",
              "--format", "json"]
    )
    # The peak is about 8.50 GB (memory/overhead.py): 8.9 GB leaves ~0.40 GB, less than the 7 % margin
    # (~0.59 GB): TIGHT.
    doc = json.loads(result.stdout)
    assert 0 <= 8_900_000_000 - doc["peak_bytes"] < doc["margin"]["bytes"]
    assert doc["status"] == "TIGHT" and doc["fits"] is True
    assert doc["gpu"] == {"name": "budget", "display_name": "budget 8.9GB", "memory_bytes": 89 * 10**8}


def test_estimate_check_with_budget_exits_1() -> None:
    result = runner.invoke(
        app, ["estimate", "mistral-7b", "--method", "qlora", "--max-memory", "8GB", "--check"]
    )
    assert result.exit_code == 1


def test_estimate_config_list_one_row_each() -> None:
    doc = run_json("estimate", "--config", str(EXAMPLES / "runs/planned.yaml"))
    assert [r["name"] for r in doc["runs"]] == ["mistral-qlora", "llama-lora-ckpt", "qwen-full-8bit"]
    assert all(r["config_source"]["kind"] == "vramcalc" for r in doc["runs"])


def test_estimate_config_flag_overrides() -> None:
    doc = run_json("estimate", "--config", str(EXAMPLES / "runs/qlora-4090.yaml"), "--batch-size", "1")
    assert doc["runs"][0]["settings"]["batch_size"] == 1
    assert doc["runs"][0]["settings"]["seq_len"] == 2048  # from the file


def test_estimate_csv() -> None:
    result = runner.invoke(
        app, ["estimate", "--config", str(EXAMPLES / "runs/planned.yaml"), "--format", "csv"]
    )
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["name"] for r in rows] == ["mistral-qlora", "llama-lora-ckpt", "qwen-full-8bit"]
    assert all(int(r["peak_bytes"]) > 0 and r["gpu"] == "rtx4090" for r in rows)


def test_compare_cross_product_and_cheapest() -> None:
    doc = run_json(
        "compare",
        "mistral-7b",
        "--method",
        "full,lora,qlora",
        "--gpu",
        "rtx4090,a100-80gb",
        "--batch-size",
        "1,4",
    )
    assert doc["varied"] == ["method", "batch_size"]
    assert len(doc["rows"]) == 3 * 2  # methods × batch sizes
    assert [r["settings"]["method"] for r in doc["rows"]] == [
        "full",
        "full",
        "lora",
        "lora",
        "qlora",
        "qlora",
    ]
    assert all(len(r["cells"]) == 2 for r in doc["rows"])
    # Full fine-tuning at 12 B/param (seed 001) is 86.9 GB before activations: fits neither GPU.
    assert {c["status"] for c in doc["rows"][0]["cells"]} == {"DOES NOT FIT"}
    # The cheapest: the smallest GPU (rtx4090) with the lowest fitting peak, QLoRA batch 1 (row index 4).
    assert doc["cheapest"] == {"row": 4, "gpu": "rtx4090"}


def test_compare_check_exits_1_when_a_cell_does_not_fit() -> None:
    assert (
        runner.invoke(
            app, ["compare", "mistral-7b", "--method", "full,qlora", "--gpu", "rtx4090", "--check"]
        ).exit_code
        == 1
    )
    assert (
        runner.invoke(
            app, ["compare", "mistral-7b", "--method", "lora,qlora", "--gpu", "rtx4090", "--check"]
        ).exit_code
        == 0
    )


def test_compare_lists_of_precisions_and_lora_target_sets() -> None:
    doc = run_json(
        "compare",
        "mistral-7b",
        "--method",
        "lora",
        "--precision",
        "bf16,mixed-bf16",
        "--lora-targets",
        "q_proj,v_proj;all-linear",
    )
    targets = [r["settings"]["lora_targets"] for r in doc["rows"]]
    assert targets == ["q_proj,v_proj", "all-linear", "q_proj,v_proj", "all-linear"]


def test_compare_table_marks_cheapest_and_plain_without_tty() -> None:
    result = runner.invoke(app, ["compare", "mistral-7b", "--method", "lora,qlora", "--gpu", "rtx4090"])
    assert result.exit_code == 0
    assert "cheapest fitting configuration" in result.stdout
    assert "\x1b[" not in result.stdout  # CliRunner is not a TTY: no colour codes
    assert "[" in result.stdout and "|" in result.stdout  # the bar, in letters


def test_compare_markdown() -> None:
    result = runner.invoke(
        app, ["compare", "mistral-7b", "--method", "lora,qlora", "--gpu", "rtx4090", "--format", "markdown"]
    )
    assert result.stdout.startswith("| # | method | peak (GB) | rtx4090 |")
    assert "★" in result.stdout


def test_fit_json() -> None:
    doc = run_json("fit", "mistral-7b", "--gpu", "rtx4090", "--method", "qlora", "--seq-len", "2048")
    # batch 1 peaks at 20,214,263,110 B, batch 2 at 35,486,859,795 B (test_solve): max 1.
    assert doc["max_batch_size"] == 1
    assert doc["max_seq_len"] >= 2048 and doc["max_lora_rank"] >= 16
    assert doc["suggestions"] == []


def test_fit_limits_keep_an_explicit_margin() -> None:
    # Without --margin the limits fill the GPU; with it they keep it (searches.fit_report), and the table says so.
    args = ("fit", "mistral-7b", "--gpu", "rtx4090", "--method", "qlora")
    plain = run_json(*args)
    kept = run_json(*args, "--margin", "25%")
    assert plain["limits_budget_bytes"] == RTX4090_BYTES
    # the largest peak p with p + ceil(p / 4) <= the 4090's bytes (core/margin.py Margin.largest_peak)
    assert kept["limits_budget_bytes"] == 20_605_776_691
    assert kept["max_seq_len"] < plain["max_seq_len"]
    table = runner.invoke(app, [*args, "--margin", "25%"]).stdout
    assert "limits keep the --margin of 25 %" in table
    assert "limits keep" not in runner.invoke(app, list(args)).stdout


def test_fit_serve_smallest_gpu_keeps_an_explicit_margin() -> None:
    # llama-3.1-8b served with one 8,192-token request needs a 38.28 GB GPU (docs/serving.md). The A100 40GB
    # (42,949,672,960 B) holds it with 12 % to spare, so it is the smallest preset without --margin; with --margin 15 %
    # the smallest preset is the first one with 38.28 GB × 1.15 = 44.0 GB or more (cli/commands/fit.py _serve_doc).
    args = ("fit", "llama-3.1-8b", "--mode", "serve", "--context", "8192", "--gpu", "l40s")
    plain = run_json(*args)
    kept = run_json(*args, "--margin", "15%")
    assert plain["smallest_gpu"]["name"] == "a100-40gb" and not plain["smallest_gpu_keeps_margin"]
    assert kept["smallest_gpu_keeps_margin"]
    smallest = kept["smallest_gpu"]["memory_bytes"]
    assert smallest >= kept["peak_bytes"] * 1.15 > plain["smallest_gpu"]["memory_bytes"]
    # vLLM's own pool sets the concurrency: the margin does not change it
    assert kept["max_concurrent_requests"] == plain["max_concurrent_requests"] == 24
    table = runner.invoke(app, [*args, "--margin", "15%"]).stdout
    assert "smallest GPU preset keeps the --margin of 15 %" in table
    assert "keeps the --margin" not in runner.invoke(app, list(args)).stdout


def test_fit_suggestions_when_nothing_fits() -> None:
    doc = run_json(
        "fit", "mistral-7b", "--gpu", "rtx4090", "--batch-size", "4", "--seq-len", "2048", "--check", code=1
    )
    assert doc["status"] == "DOES NOT FIT"
    assert doc["max_batch_size"] is None and doc["max_lora_rank"] is None
    assert doc["suggestions"] and all(s["peak_bytes"] <= RTX4090_BYTES for s in doc["suggestions"])


def test_fit_needs_a_gpu() -> None:
    result = runner.invoke(app, ["fit", "mistral-7b"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: fit needs a GPU: pass --gpu NAME (see: vramcalc gpus) or --max-memory 20GB"
    )


def test_gpus_fits_sorted_smallest_first() -> None:
    doc = run_json("gpus", "--fits", "mistral-7b", "--method", "qlora")
    sizes = [g["memory_bytes"] for g in doc["gpus"]]
    assert sizes == sorted(sizes)
    assert all(g["headroom_bytes"] == g["memory_bytes"] - doc["peak_bytes"] >= 0 for g in doc["gpus"])
    assert "rtx4090" in {g["name"] for g in doc["gpus"]}


def test_gpus_list_unchanged() -> None:
    doc = run_json("gpus")
    assert "rtx4090" in {g["name"] for g in doc["gpus"]}


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["estimate", "mistral-7b", "--margin", "12"],
            "error: --margin '12' is not a margin; write a percentage like 5% or a fraction like 0.05",
        ),
        (
            ["estimate", "mistral-7b", "--max-memory", "lots"],
            "error: --max-memory 'lots' is not a size; write e.g. 20GB, 24GiB or 80000000000",
        ),
        (["compare", "mistral-7b", "--batch-size", "1,x"], "error: --batch-size: 'x' is not an integer"),
        (
            ["compare", "mistral-7b", "--grad-checkpointing", "maybe"],
            "error: --grad-checkpointing: 'maybe' is not a boolean; use true or false",
        ),
        (
            ["estimate"],
            "error: no model; pass MODEL (a preset or a config.json path) or put `model:` in the run file",
        ),
    ],
)
def test_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.output
