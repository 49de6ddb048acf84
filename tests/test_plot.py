"""Pictures (issue 17): golden terminal charts, Mermaid, the sweep data, errors, and the cold path.

Regenerate the golden charts with VRAMCALC_REGEN_GOLDEN=1 after an intended change and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.cli import plot
from vramcalc.core.margin import Margin
from vramcalc.core.memory import estimate
from vramcalc.core.memory.timeline import timeline
from vramcalc.core.searches import Estimator, fit_report, max_batch_size, with_changes
from vramcalc.core.specs import TrainingSpec
from vramcalc.core.sweep import sweep
from vramcalc.io import presets

GOLDEN = Path(__file__).parent / "golden"
# rtx4090: memory_bytes 25,757,220,864 in presets/gpus.yaml (24 GiB as the driver reports it) = 25.76 GB.
RTX4090_GB = "25.76 GB"


@pytest.fixture(autouse=True)
def _plain(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("VRAMCALC_REGEN_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("columns", [80, 120])
def test_timeline_golden(columns: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = invoke(["timeline", "mistral-7b", "--gpu", "rtx4090"], capsys)
    assert (code, err) == (0, "")
    assert max(len(line) for line in out.splitlines()) <= columns
    _golden(f"timeline_mistral-7b_rtx4090_{columns}.txt", out)
    # The peak is marked and named: mistral-7b full bf16 peaks at 96.06 GB (README's table: peak (tensors +
    # overhead)), at the point test_timeline.py pins (the backward's end, the embedding's gradient).
    assert "peak 96.06 GB at backward end (embedding gradient)" in out
    cap_row = next(line for line in out.splitlines() if line.lstrip().startswith("25.8 +"))
    assert set(cap_row.split("+", 1)[1].split(" NVIDIA")[0]) == {"="}
    assert "\x1b[" not in out


@pytest.mark.parametrize("columns", [80, 120])
def test_fit_sweep_golden(columns: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = invoke(["fit", "mistral-7b", "--method", "qlora", "--gpu", "rtx4090", "--plot",
                             "batch-size"], capsys)
    assert (code, err) == (0, "")
    chart = out[out.index("Mistral 7B v0.1 · QLoRA"):]  # fit's own margin line is soft-wrapped (one line)
    assert max(len(line) for line in chart.splitlines()) <= columns
    _golden(f"fit_sweep_mistral-7b_qlora_rtx4090_{columns}.txt", out)
    # The chart marks the largest batch the solver finds for the same run (core/searches.fit_report).
    rep = fit_report(presets.find_model("mistral-7b"), TrainingSpec(method="qlora"),
                     presets.find_gpu("rtx4090").memory_bytes, Margin())
    n = rep.max_batch_size
    assert f"largest batch size: {n}" in out and f"largest that fits: batch size {n}" in out


def test_colour_on_a_terminal_and_plain_with_no_color(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("FORCE_COLOR", "1")
    code, out, _ = invoke(["timeline", "mistral-7b", "--gpu", "rtx4090"], capsys)
    assert code == 0 and "\x1b[" in out and "█" in out and "peak 96.06 GB at backward end (embedding gradient) ▼" in out
    monkeypatch.setenv("NO_COLOR", "1")
    code, out, _ = invoke(["timeline", "mistral-7b", "--gpu", "rtx4090"], capsys)
    assert code == 0 and "\x1b[" not in out and "█" not in out
    # at 80 columns the label sits left of the marker
    assert "peak 96.06 GB at backward end (embedding gradient) v" in out


def test_estimate_plot_appends_the_chart(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, plain, _ = invoke(["estimate", "mistral-7b", "--gpu", "rtx4090"], capsys)
    code2, out, _ = invoke(["estimate", "mistral-7b", "--gpu", "rtx4090", "--plot"], capsys)
    assert code == code2 == 0
    assert out.startswith(plain) and "peak 96.06 GB at backward end (embedding gradient)" in out[len(plain):]


def test_markdown_has_a_mermaid_xychart(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["estimate", "mistral-7b", "--gpu", "rtx4090", "--plot", "--format", "markdown"], capsys)
    assert code == 0
    block = out[out.index("```mermaid"):]
    assert "xychart-beta" in block and "peak 96.06 GB at backward end (embedding gradient)" in block
    # six stacked components are non-zero for full fine-tuning: weights, optimizer state, gradients,
    # activations, temporaries, overhead (communication and KV cache are zero on one GPU in training).
    assert block.count("    bar [") == 6
    line = next(x for x in block.splitlines() if x.startswith("    line ["))
    assert set(line.removeprefix("    line [").rstrip("]").split(", ")) == {RTX4090_GB.split()[0]}


@pytest.mark.parametrize("argv", [
    ["estimate", "mistral-7b", "--plot", "--format", "json"],
    ["timeline", "mistral-7b", "--sweep", "batch-size"],
    ["fit", "mistral-7b", "--gpu", "rtx4090", "--plot", "lora-rank"],
    ["compare", "mistral-7b", "--method", "lora,qlora", "--gpu", "rtx4090", "--plot", "batch-size"],
    ["fit", "mistral-7b", "--gpu", "rtx4090", "--plot", "width"],
])
def test_bad_plot_input_is_one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_timeline_json_points(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code, out, _ = invoke(["timeline", "qwen2.5-0.5b", "--format", "json"], capsys)
    doc = json.loads(out)
    b = estimate(presets.find_model("qwen2.5-0.5b"), TrainingSpec())
    assert code == 0 and max(p["total_bytes"] for p in doc["points"]) == doc["tensor_peak_bytes"] == b.tensor_peak_bytes


def test_sweep_marks_solves_boundary() -> None:
    m = presets.find_model("mistral-7b")
    t = TrainingSpec(method="qlora")
    cap = presets.find_gpu("rtx4090").memory_bytes
    sw = sweep(m, t, "batch_size", cap)
    est = Estimator(m)
    assert sw.largest == max_batch_size(est, t, cap)
    assert sw.largest in sw.values
    assert est.peak(with_changes(t, {"batch_size": sw.largest})) <= cap
    assert est.peak(with_changes(t, {"batch_size": sw.largest + 1})) > cap
    for v, p in zip(sw.values, sw.peaks, strict=True):
        assert p == estimate(m, with_changes(t, {"batch_size": v})).peak_bytes


def test_terminal_never_averages_the_peak_away() -> None:
    # llama-3.1-405b has 126 layers (presets/models/llama.yaml): 262 columns squeezed into 80 characters.
    tl = timeline(presets.find_model("llama-3.1-405b"), TrainingSpec(method="qlora"))
    chart = plot.step_chart(tl, "t", "GB", None)
    cols = plot._columns_for(chart, 60)
    assert len(cols) == 60 and tl.peak_index in cols


def test_plain_estimate_does_not_import_the_plotting_code() -> None:
    code = ("import sys, vramcalc.cli.app; bad = [m for m in ('vramcalc.cli.plot', 'vramcalc.core.memory.timeline', "
            "'vramcalc.core.sweep') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
