"""Reentrant checkpointing (--reentrant-gc, issue 13): torch.utils.checkpoint use_reentrant=True, LLaMA-Factory's
default use_reentrant_gc; against hand derivations, the tracer and the run-file readers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles

# tinyllama-1.1b (presets/models, its config.json: hidden 2,048) cut to 2 layers, as --grid reentrant
TINYLLAMA = replace(presets.find_model("tinyllama-1.1b"), num_layers=2)
H = 2048
FULL = {"method": "full", "precision": "pure-bf16"}
LORA = {"method": "lora", "precision": "bf16", "lora_targets": ("all-linear",)}


def _moments(reentrant: bool, **kw: object) -> dict[str, int]:
    t = TrainingSpec(grad_checkpointing=True, reentrant_gc=reentrant, loss="cut", **kw)  # type: ignore[arg-type]
    return {m.key: m.total for m in estimate(TINYLLAMA, t).named_moments()}


def test_the_rerun_output_is_held_through_the_layer_backward() -> None:
    # CheckpointFunction.backward holds the rerun's output (bf16, hidden wide) until torch.autograd.backward over it
    # returns: 2 B x 2,048 x (2 x 2,048 tokens) more in each layer-backward moment; the forward does not change
    nr, re = _moments(False, batch_size=2, seq_len=2048, **FULL), _moments(True, batch_size=2, seq_len=2048, **FULL)
    tokens = 2 * 2048
    assert re["backward.bottom"] - nr["backward.bottom"] == 2 * H * tokens
    assert re["backward.top"] - nr["backward.top"] == 2 * H * tokens
    assert re["forward.layer"] == nr["forward.layer"] and re["backward.recompute"] == nr["backward.recompute"]


def test_the_rerun_runs_before_down_projs_adapter_gradients() -> None:
    # The reentrant rerun starts before any of the layer's backward: peft's fp32 scaled gradient of down_proj's
    # adapter (4 B x hidden) and the bf16 base output's cast-back gradient (2 B x hidden) are not alive beside it
    nr, re = _moments(False, batch_size=2, seq_len=2048, **LORA), _moments(True, batch_size=2, seq_len=2048, **LORA)
    tokens = 2 * 2048
    assert nr["backward.recompute"] - re["backward.recompute"] == (4 + 2) * H * tokens
    assert re["backward.top"] - nr["backward.top"] == 2 * H * tokens


@pytest.mark.parametrize("kw", [FULL, LORA], ids=["full", "lora"])
def test_matches_the_trace(kw: dict[str, object]) -> None:
    # the tracer passes gradient_checkpointing_kwargs={"use_reentrant": True} to transformers (trace/_run.py)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(grad_checkpointing=True, reentrant_gc=True, loss="cut", batch_size=2, seq_len=1024,
                     **kw)  # type: ignore[arg-type]
    e, r = estimate(TINYLLAMA, t), trace(TINYLLAMA, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)
    if kw is FULL:
        # the traced difference to non-reentrant: exactly the held rerun output (bf16 hidden x 2,048 tokens)
        nr = trace(TINYLLAMA, replace(t, reentrant_gc=False))
        assert r.peak_bytes - nr.peak_bytes == 2 * H * 2 * 1024


def _load(tmp_path: Path, name: str, data: dict[str, object]) -> runfiles.Run:
    f = tmp_path / name
    f.write_text(json.dumps(data))
    return runfiles.load(str(f))[0]


LF = {"model_name_or_path": "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "stage": "sft", "finetuning_type": "lora"}


def test_llama_factory_checkpointing_is_reentrant_by_default(tmp_path: Path) -> None:
    # model_args.py use_reentrant_gc defaults to True (hiyouga/LLaMA-Factory ff6d4d12)
    run = _load(tmp_path, "lf.json", LF)
    assert run.options["grad_checkpointing"] and run.options["reentrant_gc"]
    run = _load(tmp_path, "lf.json", {**LF, "use_reentrant_gc": False})
    assert run.options["grad_checkpointing"] and not run.options["reentrant_gc"]
    assert "use_reentrant_gc" in run.mapped and not run.unmodelled
    run = _load(tmp_path, "lf.json", {**LF, "disable_gradient_checkpointing": True})
    assert not run.options["grad_checkpointing"] and "reentrant_gc" not in run.options
    # use_unsloth_gc replaces torch's checkpoint with Unsloth's offloaded one
    run = _load(tmp_path, "lf.json", {**LF, "use_unsloth_gc": True})
    assert run.options["activation_offload"] and "reentrant_gc" not in run.options


def test_hf_gradient_checkpointing_kwargs(tmp_path: Path) -> None:
    base = {"output_dir": "o", "gradient_checkpointing": True}
    run = _load(tmp_path, "a.json", {**base, "gradient_checkpointing_kwargs": {"use_reentrant": True}})
    assert run.options["reentrant_gc"] and "gradient_checkpointing_kwargs" in run.mapped and not run.unmodelled
    run = _load(tmp_path, "a.json", {**base, "gradient_checkpointing_kwargs": {"use_reentrant": False}})
    assert "reentrant_gc" not in run.options and not run.unmodelled
    # GRPOConfig turns checkpointing on by default: the kwargs apply to it
    run = _load(tmp_path, "g.json", {"output_dir": "o", "num_generations": 4, "max_completion_length": 64,
                                     "gradient_checkpointing_kwargs": {"use_reentrant": True}})
    assert run.options["grad_checkpointing"] and run.options["reentrant_gc"]
    # (the other torch.utils.checkpoint keywords: tests/test_checkpointing_kwargs.py)


def test_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "tinyllama-1.1b", "--reentrant-gc"], capsys)
    assert code == 2 and "add --grad-checkpointing" in err and len(err.strip().splitlines()) == 1
    code, _, err = invoke(["estimate", "tinyllama-1.1b", "--grad-checkpointing", "--reentrant-gc",
                           "--activation-offload"], capsys)
    assert code == 2 and "--activation-offload" in err and len(err.strip().splitlines()) == 1
