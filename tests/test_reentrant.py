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


def _named(reentrant: bool, **kw: object) -> dict[str, object]:
    t = TrainingSpec(grad_checkpointing=True, reentrant_gc=reentrant, loss="cut", **kw)  # type: ignore[arg-type]
    e = estimate(TINYLLAMA, t)
    return {m.key: m for m in e.named_moments()} | {"static": e.weights + e.optimizer_state}


INTER = 5632  # tinyllama-1.1b's intermediate_size (its config.json)
RANK = 16  # TrainingSpec's default lora_rank


def test_the_rerun_runs_through_down_projs_adapter() -> None:
    # Reentrant: CheckpointFunction.backward reruns the whole layer before any of its backward, so the rerun passes
    # down_proj's adapter with the MLP's whole saved set made: the bf16 product act(gate) * up (2 B x 5,632; lora_A
    # saves its own fp32 cast), the bf16 base output, lora_B's fp32 output and its scaled copy (2 + 4 + 4 B x 2,048),
    # the incoming gradient and the held normed input and post-attention residual (3 x 2 B x 2,048); the layer's
    # backward then peaks at down_proj's lora_A mm (test below) beside the held rerun output (2 B x 2,048). So, per
    # token, the rerun is 2 INTER + 16 H above the set, the top moment 4 INTER + 4 H + 2 H and the adapter's gradients
    re = _named(True, batch_size=2, seq_len=2048, **LORA)
    tokens = 2 * 2048
    rerun, top = re["backward.recompute"].total, re["backward.top"].total  # type: ignore[attr-defined]
    # (37,257,216 B)
    assert rerun - top == (2 * INTER + 16 * H - (4 * INTER + 4 * H + 2 * H)) * tokens - 4 * RANK * (INTER + H)
    nr = _named(False, batch_size=2, seq_len=2048, **LORA)
    assert top - nr["backward.top"].total == 2 * H * tokens  # type: ignore[attr-defined]  # the held rerun output


@pytest.mark.parametrize("reentrant", [False, True])
def test_the_layer_backward_peaks_at_down_projs_lora_a(reentrant: bool) -> None:
    # Checkpointed, with fp32 LoRA on down_proj the layer's largest backward node beside its whole recomputed set is
    # lora_A's input gradient (aten.mm, 4 B x 5,632 per token) with the incoming gradient and the residual stream's
    # (2 x 2 B x 2,048), lora_A's weight gradient being made and lora_B's written (4 B x 16 x (5,632 + 2,048)): not
    # the product's three gradients (3 x 2 B x 5,632 + 2 B x 2,048), made after autograd freed lora_A's fp32 input,
    # nor the RMSNorm's five fp32 (5 x 4 B x 2,048), made after the MLP's saved set is freed
    tokens = 2 * 2048
    m = _named(reentrant, batch_size=2, seq_len=2048, **LORA)
    node = next(x.bytes for x in m["backward.top"].terms if x.name == "layer backward temporaries")  # type: ignore[attr-defined]
    assert node == (4 * INTER + 2 * 2 * H) * tokens + 4 * RANK * (INTER + H)  # 126,320,640 B


@pytest.mark.parametrize(("reentrant", "key", "traced"), [
    (True, "backward.top", 89_924_608 + 131_072), (True, "backward.recompute", 94_282_752),
    (False, "backward.top", 87_827_456 + 131_072)])
def test_the_moments_match_the_traced_nodes(reentrant: bool, key: str, traced: int) -> None:
    # measured with the tracer's live tensors (activations + temporaries + gradients, weights and optimizer state
    # off), LoRA all-linear b1 s512 with the cut loss: the top layer's down_proj lora_A mm (lora_B's gradient
    # written) and the reentrant rerun's down_proj scaling mul. The estimate's set is 10 B per token under it.
    m = _named(reentrant, batch_size=1, seq_len=512, **LORA)
    assert -10 * 512 <= m[key].total - m["static"] - traced <= 0  # type: ignore[attr-defined, operator]


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
