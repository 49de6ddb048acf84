"""The real-GPU harness on a machine without one: refusal, argument handling, the data format, and the
measured-step code path with the torch.cuda calls replaced by a stand-in backend (trace/_cuda_run.py,
cli/commands/trace.py --device cuda, benchmarks/real_gpu.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bench_module import load_benchmark
from vramcalc.cli.app import app
from vramcalc.core.specs import ModelSpec, TrainingSpec

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramcalc.trace import _cuda_run  # noqa: E402
from vramcalc.trace._cuda_run import CudaReading, measured_lengths, nvml_used_bytes, run_cuda  # noqa: E402

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")

# The tracer's tiny llama (tests/test_trace.py): two layers, hidden 64, vocab 256.
TINY = ModelSpec(name="tiny-llama", source="test", family="llama", vocab_size=256, hidden_size=64,
                 intermediate_size=128, num_layers=2, num_attention_heads=4, num_kv_heads=2)


@no_gpu
def test_device_cuda_refuses_in_one_line_without_cuda() -> None:
    result = runner.invoke(app, ["trace", "gpt2", "--device", "cuda"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --device cuda needs a CUDA GPU and torch.cuda.is_available() is False "
                                     "here; run `vramcalc trace` without --device for the fake-tensor trace, which "
                                     "needs no GPU")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["--variable-lengths"], ["--steps", "3"]])
def test_cuda_only_options_need_device_cuda(args: list[str]) -> None:
    result = runner.invoke(app, ["trace", "gpt2", *args])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --variable-lengths and --steps apply to --device cuda (the fake trace "
                                     "runs two fixed-length steps): add --device cuda or drop them")


def test_bad_device_is_a_usage_error() -> None:
    result = runner.invoke(app, ["trace", "gpt2", "--device", "tpu"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_measured_lengths() -> None:
    assert measured_lengths(512, False, 3) == (512, 512, 512)
    got = measured_lengths(512, True, 5, seed=1)
    assert len(got) == 5 and got[-1] == 512  # the longest batch last
    assert list(got) == sorted(got) and all(256 <= n <= 512 for n in got)  # drawn from [seq/2, seq], shortest first
    assert measured_lengths(512, True, 5, seed=1) == got  # seeded


class StandIn:
    """The CudaBackend interface on the CPU, returning fixed readings."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[str] = []

    def synchronize(self) -> None:
        self.calls.append("sync")

    def reset_peaks(self) -> None:
        self.calls.append("reset")

    def peaks(self) -> tuple[int, int]:
        return 1_000_000, 3_000_000

    def nvml_used(self) -> tuple[int | None, str]:
        return None, "missing: stand-in"

    def environment(self) -> dict[str, str]:
        return {"gpu": "stand-in"}


@pytest.mark.parametrize("training", [
    TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=16),
    TrainingSpec(method="lora", precision="bf16", seq_len=16, grad_accum=2),
    TrainingSpec(method="qlora", precision="bf16", seq_len=16, grad_checkpointing=True),
], ids=["full", "lora-accum", "qlora-checkpointing"])
def test_measured_steps_run_on_a_stand_in_device(training: TrainingSpec) -> None:
    backend = StandIn()
    r = run_cuda(TINY, training, variable_lengths=True, steps=3, backend=backend)
    # warm-up, sync, reset, three measured steps, sync: the peaks cover the measured steps only
    assert backend.calls == ["sync", "reset", "sync"]
    assert (r.max_allocated_bytes, r.max_reserved_bytes) == (1_000_000, 3_000_000)
    assert r.lengths[-1] == 16 and len(r.lengths) == 3
    assert r.nvml_used_bytes is None and any("NVML used memory missing" in n for n in r.notes)
    assert r.environment == {"gpu": "stand-in"}


def test_refusal_comes_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from vramcalc.core.errors import BadInput

    with pytest.raises(BadInput, match="needs a CUDA GPU"):
        run_cuda(TINY, TrainingSpec(method="lora", seq_len=16))


def test_cli_prints_the_reading_beside_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    from vramcalc.core.memory import estimate
    from vramcalc.io import presets

    reading = CudaReading(max_allocated_bytes=400_000_000, max_reserved_bytes=500_000_000,
                          nvml_used_bytes=1_000_000_000, nvml_source="pynvml", lengths=(256, 256),
                          environment={"gpu": "Test GPU", "driver": "1.0", "torch": "2.13.0", "cuda": "13.0"})
    import vramcalc.trace as tr

    monkeypatch.setattr(tr, "trace_cuda", lambda *a, **k: reading)
    result = runner.invoke(app, ["trace", "gpt2", "--seq-len", "256", "--device", "cuda", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    b = estimate(presets.find_model("gpt2"), TrainingSpec(seq_len=256))
    assert doc["device"] == "cuda" and doc["measured"]["max_memory_allocated"] == 400_000_000
    assert doc["estimate"]["tensor_peak_bytes"] == b.tensor_peak_bytes
    assert doc["estimate"]["reserved_peak_bytes"] == b.reserved_peak_bytes
    # (estimate - reading) / reading in percent, rounded to 0.01 (cli/commands/trace.py _error_pct)
    assert doc["error"]["allocated_pct"] == round(100 * (b.tensor_peak_bytes - 400_000_000) / 400_000_000, 2)
    context = b.details["overhead.cuda_context"]
    assert doc["error"]["nvml_pct"] == round(100 * (b.reserved_peak_bytes + context - 10**9) / 10**9, 2)
    table = runner.invoke(app, ["trace", "gpt2", "--seq-len", "256", "--device", "cuda"])
    assert table.exit_code == 0 and "max_memory_reserved" in table.stdout and "Test GPU" in table.stdout


def test_nvml_missing_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    monkeypatch.setattr(_cuda_run.shutil, "which", lambda name: None)
    assert nvml_used_bytes(0) == (None, "missing: install pynvml (pip install nvidia-ml-py) or put nvidia-smi on PATH")


def test_nvml_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 1234\n")  # memory.used in MiB, as --format=csv,noheader,nounits prints it
    smi.chmod(0o755)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(_cuda_run.shutil, "which", lambda name: str(smi))
    assert nvml_used_bytes(0) == (1234 * 2**20, "nvidia-smi")


def _real_gpu() -> Any:
    return load_benchmark("real_gpu", "real_gpu")


def test_real_gpu_grid_covers_the_issue() -> None:
    rg = _real_gpu()
    from vramcalc.io import presets

    cases = rg.cases()
    families = {presets.find_model(m).family for m in rg.MODELS}
    assert len(rg.MODELS) >= 8 and len(families) >= 8  # >= 8 architectures
    assert {c["method"] for c in cases} == {"full", "lora", "qlora"}
    assert len({(c["batch_size"], c["seq_len"]) for c in cases}) == 2 and {c["lengths"] for c in cases} == {
        "fixed", "variable"}
    assert len(cases) == len(rg.MODELS) * 3 * 2 * 2 and len({c["id"] for c in cases}) == len(cases)


@no_gpu
def test_real_gpu_refuses_without_cuda(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rg = _real_gpu()
    assert rg.main(["--only", "gpt2-lora", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: benchmarks/real_gpu.py needs a CUDA GPU: torch.cuda.is_available() is False; --dry-run lists the "
        "grid without one")
    assert not list(tmp_path.iterdir())  # nothing written


def test_real_gpu_dry_run_and_bad_filter(capsys: pytest.CaptureFixture[str]) -> None:
    rg = _real_gpu()
    assert rg.main(["--dry-run", "--only", "gpt2-qlora-b1-s512"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out] == ["gpt2-qlora-b1-s512-fixed", "gpt2-qlora-b1-s512-variable"]
    assert rg.main(["--dry-run", "--only", "nope"]) == 2


def test_real_gpu_records_and_summary(tmp_path: Path) -> None:
    rg = _real_gpu()
    ran = {"id": "a", "estimate": {"tensor_peak_bytes": 110, "reserved_peak_bytes": 120},
           "measured": {"max_memory_allocated": 100, "max_memory_reserved": 100, "environment": {"gpu": "X"}},
           "error": {"allocated_pct": 10.0, "reserved_pct": 20.0, "nvml_pct": None}}
    failed = {"id": "b", "failure": "out of memory"}
    s = rg.summarize([ran, failed])
    assert s["allocated_pct"] == {"n": 1, "median_abs": 10.0, "max_abs": 10.0, "median_signed": 10.0}
    assert s["nvml_pct"] == {"n": 0} and s["failed"] == 1
    md = rg.markdown({"environment": {"gpu": "X"}, "summary": s, "readings": [ran, failed]})
    assert "| a | 0.000 | 0.000 | +10.00 |" in md and "| b | out of memory |" in md


def test_hqq_runs_on_a_stand_in_device() -> None:
    # hqq's own HQQLinear (trace/_hf.py quantize_blocks_hqq) given real storage by to_empty: its forward and backward
    # dequantize from the W_q parameter and the scale / zero buffers
    pytest.importorskip("hqq")
    training = TrainingSpec(method="qlora", precision="bf16", seq_len=16, grad_checkpointing=True,
                            quant_backend="hqq", quant_bits=3, hqq_axis=0)
    r = run_cuda(TINY, training, steps=1, backend=StandIn())
    assert any(n.startswith("qlora hqq:") for n in r.notes)
