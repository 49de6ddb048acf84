"""--compile (issue 13): torch.compile keys mapped, the eager estimate as an upper bound with the measured gap.

The measurements are benchmarks/results/compile_peaks.json (benchmarks/compile_peaks.py: real CPU steps, eager and
compiled, the CPU allocator's live bytes from torch.profiler); memory/compiled.py quotes their range.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from bench_module import BENCHMARKS, load_benchmark
from vramcalc.core.errors import VramcalcError
from vramcalc.core.memory import compiled, estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles

peaks = load_benchmark("compile_peaks", "compile_peaks")
ROWS = json.loads((BENCHMARKS / "results" / "compile_peaks.json").read_text())
INDUCTOR = ("inductor", "inductor_layers")  # the Trainer's whole-model compile, torchtune's per-layer compile


def _gap_percent(eager: dict, compiled_row: dict) -> float:
    e, c = peaks.total_peak_bytes(eager), peaks.total_peak_bytes(compiled_row)
    return 100 * (e - c) / e


def test_every_inductor_step_peaks_at_most_at_the_eager_step() -> None:
    measured = peaks.pairs(ROWS, INDUCTOR)
    # 2 architectures x full / LoRA x checkpointing off / on: fp32 with both compile styles, bf16 whole-model, and
    # Llama fp32 at batch 1 x seq 1024
    assert len(measured) >= 28
    for eager, c in measured:
        assert peaks.total_peak_bytes(c) <= peaks.total_peak_bytes(eager), c


def test_the_note_quotes_the_measured_range() -> None:
    gaps: dict[str, list[float]] = {}
    for e, c in peaks.pairs(ROWS, INDUCTOR):
        gaps.setdefault({"float32": "fp32", "bfloat16": "bf16"}[c["dtype"]], []).append(_gap_percent(e, c))
    assert compiled.GAP_RANGE_PERCENT == {d: (round(min(g), 1), round(max(g), 1)) for d, g in gaps.items()}
    for dtype, (low, high) in compiled.GAP_RANGE_PERCENT.items():
        assert f"{low:.1f}-{high:.1f} % with {dtype} weights" in compiled.note()


def test_the_debugging_backends_exceed_the_eager_step() -> None:
    # why the readers refuse them: aot_eager runs the backward graph as one Python call holding every saved tensor
    # to its end (no boxed freeing), so its step peaks above eager's on every measured pair
    measured = peaks.pairs(ROWS, ("aot_eager", "aot_eager_decomp_partition"))
    assert len(measured) >= 8
    assert all(peaks.total_peak_bytes(c) > peaks.total_peak_bytes(e) for e, c in measured)


def test_compile_keeps_the_eager_numbers_and_adds_the_note() -> None:
    model = presets.find_model("llama-3.1-8b")
    for gc in (False, True):
        eager = estimate(model, TrainingSpec(method="lora", grad_checkpointing=gc))
        b = estimate(model, TrainingSpec(method="lora", grad_checkpointing=gc, compile=True))
        assert b.notes == (*eager.notes, compiled.note())
        assert b == replace(eager, notes=b.notes)  # every number the eager step's


def test_compile_is_for_training_steps() -> None:
    with pytest.raises(VramcalcError, match="--compile is measured for training steps"):
        TrainingSpec(mode="inference", compile=True)


def _load(tmp_path: Path, name: str, text: str) -> runfiles.Run:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return runfiles.load(str(path))[0]


@pytest.mark.parametrize(("name", "text"), [
    ("hf.json", '{"output_dir": "o", "torch_compile": true}'),
    # transformers training_args.py __post_init__: a backend or a mode alone turns torch_compile on
    ("backend.json", '{"output_dir": "o", "torch_compile_backend": "inductor"}'),
    ("mode.json", '{"output_dir": "o", "torch_compile_mode": "max-autotune-no-cudagraphs"}'),
    # axolotl schemas/config.py check_torch_compile_auto: auto is on with torch >= 2.5.1
    ("ax.yaml", "base_model: gpt2\ntorch_compile: auto\ntorch_compile_mode: default\n"),
    ("lf.yaml", "model_name_or_path: gpt2\nstage: sft\nfinetuning_type: full\ntorch_compile: true\n"),
    ("tt.yaml", "model: {_component_: torchtune.models.llama3_1.lora_llama3_1_8b}\ncompile: true\n"),
    ("acc.yaml", "compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: bf16\n"
                 "dynamo_config: {dynamo_backend: INDUCTOR, dynamo_mode: default}\n"),
], ids=["hf", "hf-backend-only", "hf-mode-only", "axolotl-auto", "llama-factory", "torchtune", "accelerate"])
def test_compile_keys_map_to_compile(tmp_path: Path, name: str, text: str) -> None:
    run = _load(tmp_path, name, text)
    assert run.options.get("compile") is True and run.unmodelled == []


def test_axolotl_passes_backend_and_mode_only_with_torch_compile(tmp_path: Path) -> None:
    # axolotl core/builders/base.py _configure_torch_compile: nothing is passed on unless torch_compile is truthy
    run = _load(tmp_path, "ax.yaml", "base_model: gpt2\ntorch_compile_mode: reduce-overhead\n")
    assert "compile" not in run.options and "torch_compile_mode" in run.mapped
    off = _load(tmp_path, "off.json", '{"output_dir": "o", "torch_compile": false}')
    assert "compile" not in off.options and off.unmodelled == []


@pytest.mark.parametrize(("text", "message"), [
    ('{"output_dir": "o", "torch_compile": true, "torch_compile_mode": "reduce-overhead"}',
     "torch_compile_mode: reduce-overhead uses CUDA graphs, whose cudagraph trees keep every recorded graph's "
     "outputs and intermediates in a private pool across replays (torch/_inductor/cudagraph_trees.py), which "
     "vramcalc does not model; use default or max-autotune-no-cudagraphs, or remove it"),
    ('{"output_dir": "o", "torch_compile_backend": "aot_eager"}',
     "torch_compile_backend: 'aot_eager' is not modelled: vramcalc models inductor (the default; debugging backends "
     "such as aot_eager hold every saved tensor to the end of backward); use inductor or remove it"),
    ('{"output_dir": "o", "torch_compile": true, "torch_compile_mode": "fast"}',
     "torch_compile_mode: 'fast' is not a torch.compile mode; use default, max-autotune-no-cudagraphs, "
     "reduce-overhead, max-autotune"),
], ids=["cuda-graphs", "debug-backend", "unknown-mode"])
def test_what_is_not_modelled_is_refused_in_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(VramcalcError) as e:
        _load(tmp_path, "a.json", text)
    assert str(e.value).endswith(message) and "\n" not in str(e.value)


def test_axolotl_inductor_flags(tmp_path: Path) -> None:
    head = "base_model: gpt2\ntorch_compile: true\ntorch_compile_options: "
    with pytest.raises(VramcalcError, match="triton.cudagraphs uses CUDA graphs"):
        _load(tmp_path, "a.yaml", head + "{triton.cudagraphs: true}\n")
    tuned = _load(tmp_path, "b.yaml", head + "{coordinate_descent_tuning: true, max_autotune_gemm: true}\n")
    assert tuned.options["compile"] is True and tuned.unmodelled == []
    padded = _load(tmp_path, "c.yaml", head + "{shape_padding: true}\n")
    assert padded.options["compile"] is True and padded.unmodelled == ["torch_compile_options"]


@pytest.mark.skipif(shutil.which("g++") is None, reason="inductor on the CPU needs a C++ compiler")
def test_a_compiled_toy_step_peaks_below_its_eager_step() -> None:
    # the relation measured live on a smaller toy (1 layer, hidden 128, fp32, batch 1 x seq 256): fails if a torch or
    # transformers upgrade made the compiled step keep more than eager autograd
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    eager = peaks.measure("llama", "full", False, "none", "float32", 1, 256, layers=1, hidden=128)
    comp = peaks.measure("llama", "full", False, "inductor", "float32", 1, 256, layers=1, hidden=128)
    assert eager["resident_bytes"] == comp["resident_bytes"]
    assert comp["peak_above_start_bytes"] < eager["peak_above_start_bytes"]
