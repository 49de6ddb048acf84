"""The CLI: verdicts, JSON, exit codes, and one-line errors for bad input of every option."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from vramcalc.cli.app import app

runner = CliRunner()
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb"}
MISTRAL_PARAMS = 7_241_732_096  # shared/seeds/000


def invoke(*args: str):  # noqa: ANN201 - click Result
    return runner.invoke(app, list(args), env=ENV)


def test_example_command_prints_verdict() -> None:
    r = invoke("estimate", "mistral-7b", "--method", "full", "--gpu", "rtx4090")
    assert r.exit_code == 0, r.output
    assert "DOES NOT FIT on NVIDIA GeForce RTX 4090 (24 GiB = 25.8 GB): needs" in r.stdout
    assert "14.48 GB" in r.stdout  # bf16 weights, shared/seeds/000


def test_json_is_parseable_with_integer_bytes() -> None:
    r = invoke("estimate", "mistral-7b", "--gpu", "rtx4090", "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["parameters"] == MISTRAL_PARAMS
    assert doc["components"]["weights"] == 2 * MISTRAL_PARAMS
    assert set(doc["components"]) >= {"weights", "gradients", "optimizer_state", "activations", "overhead"}
    assert doc["peak_phase"] in ("forward", "backward", "optimizer_step")
    assert doc["peak_bytes"] == doc["tensor_peak_bytes"] + doc["components"]["overhead"]
    assert doc["fits"] is False
    assert doc["headroom_bytes"] == 24564 * 2**20 - doc["peak_bytes"]  # RTX 4090: 24564 MiB
    assert doc["settings"]["seq_len"] == 512 and doc["settings"]["method"] == "full"


def test_check_gates_on_fit() -> None:
    assert invoke("estimate", "mistral-7b", "--gpu", "rtx4090", "--check").exit_code == 1
    assert invoke("estimate", "mistral-7b", "--method", "qlora", "--gpu", "rtx4090", "--check").exit_code == 0
    assert invoke("estimate", "mistral-7b", "--gpu", "rtx4090").exit_code == 0  # no --check: report only


@pytest.mark.parametrize("fmt", ["yaml", "markdown", "table"])
def test_other_formats(fmt: str) -> None:
    r = invoke("estimate", "gpt2", "--format", fmt)
    assert r.exit_code == 0 and r.stdout.strip()


def test_units_gib() -> None:
    r = invoke("estimate", "mistral-7b", "--units", "GiB")
    assert "13.49 GiB" in r.stdout  # 14,483,464,192 / 2^30 = 13.49
    assert "memory (GiB)" in r.stdout


def test_unknown_model_is_one_line_exit_2() -> None:
    r = invoke("estimate", "mistrall-7b")
    assert r.exit_code == 2
    assert r.stderr == ("error: unknown model 'mistrall-7b'; did you mean 'mistral-7b', 'mistral-7b-v0.3', "
                        "'mixtral-8x7b'? (see: vramcalc models)\n")
    assert "Traceback" not in r.output


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu", "rtx9999"], "error: unknown gpu 'rtx9999'"),
    (["--batch-size", "0"], "error: --batch-size: Input should be greater than 0"),
    (["--seq-len", "-1"], "error: --seq-len: Input should be greater than 0"),
    (["--grad-accum", "0"], "error: --grad-accum: Input should be greater than 0"),
    (["--lora-rank", "0", "--method", "lora"], "error: --lora-rank: Input should be greater than 0"),
    (["--lora-alpha", "0"], "error: --lora-alpha: Input should be greater than 0"),
    (["--lora-dropout", "1.5"], "error: --lora-dropout: Input should be less than 1"),
    (["--method", "lora", "--lora-targets", "qproj"], "error: unknown LoRA target 'qproj'"),
    (["--method", "lora", "--lora-targets", ","], "error: --lora-targets: empty value"),  # coerce, naming the flag
    (["--method", "freeze"], "error: method 'freeze' needs --freeze-layers N"),
    (["--freeze-layers", "-2"], "error: --freeze-layers: Input should be greater than or equal to 0"),
    (["--quant-bits", "7"], "error: --quant-bits must be one of 1, 2, 3, 4, 5, 6, 8, not 7"),
    # 3 bits is hqq's, not bitsandbytes' (core/specs.py TrainingSpec.__post_init__)
    (["--quant-bits", "3"], "error: --quant-bits: bitsandbytes quantizes to 4 or 8 bits, not 3: use --quant-bits 4 "
                            "or 8 (or --quant-backend hqq)"),
])
def test_bad_values_are_one_line_exit_2(args: list[str], message: str) -> None:
    r = invoke("estimate", "mistral-7b", *args)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(message), r.stderr
    assert r.stderr.count("\n") == 1
    assert "Traceback" not in r.output


@pytest.mark.parametrize("args", [
    ["--method", "sideways"], ["--precision", "fp8"], ["--optimizer", "adam"], ["--optimizer-impl", "x"],
    ["--attention", "flash3"], ["--adapter-dtype", "int8"], ["--format", "xml"], ["--units", "MB"],
    ["--batch-size", "many"], ["--bogus-flag"],
], ids=lambda a: a[0])
def test_usage_errors_are_one_line_exit_2(args: list[str]) -> None:
    # Through the console entry point (main), which turns Click's usage boxes into one line.
    p = subprocess.run([sys.executable, "-m", "vramcalc", "estimate", "mistral-7b", *args],
                       capture_output=True, text=True, env={**os.environ, **ENV}, check=False)
    assert p.returncode == 2
    assert p.stderr.startswith("error: "), p.stderr
    assert p.stderr.count("\n") == 1, p.stderr
    assert "Traceback" not in p.stderr


def test_models_and_gpus_list() -> None:
    models = json.loads(invoke("models", "--format", "json").stdout)["models"]
    assert {"mistral-7b", "llama-3.1-8b", "gpt2", "resnet-50"} <= {m["name"] for m in models}
    gpus = json.loads(invoke("gpus", "--format", "json").stdout)["gpus"]
    assert {"rtx4090", "a100-80gb", "a100-40gb", "h100", "l4", "t4"} <= {g["name"] for g in gpus}


def test_show_breaks_down_parameters() -> None:
    doc = json.loads(invoke("show", "mistral-7b", "--format", "json").stdout)
    assert doc["parameters"] == MISTRAL_PARAMS
    assert sum(doc["breakdown"].values()) == MISTRAL_PARAMS


def test_bf16_on_t4_warns() -> None:
    doc = json.loads(invoke("estimate", "gpt2", "--gpu", "t4", "--format", "json").stdout)
    assert any("no bf16 support" in n for n in doc["notes"])


def test_version() -> None:
    r = invoke("--version")
    assert r.exit_code == 0 and r.stdout.startswith("vramcalc ")


@pytest.mark.parametrize("fmt", ["json", "yaml", "csv", "markdown"])
@pytest.mark.parametrize("args", [
    ["estimate", "gpt2"], ["explain", "gpt2"], ["compare", "gpt2", "--method", "full,lora"],
    ["fit", "gpt2", "--gpu", "t4"], ["gpus"], ["gpus", "--fits", "gpt2"], ["models"], ["show", "gpt2"],
    ["storage", "gpt2", "--lora-targets", "c_attn"],
], ids=lambda a: " ".join(a) if isinstance(a, list) else a)
def test_every_command_speaks_every_format(args: list[str], fmt: str) -> None:
    # Issue 4: --format json|yaml|csv|markdown for every command (trace too: tests/test_trace.py needs torch).
    r = invoke(*args, "--format", fmt)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip()
    if fmt == "json":
        json.loads(r.stdout)
