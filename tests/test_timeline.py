"""The timeline is the core's phase model over time: its maxima are the Breakdown's, exactly."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vramcalc.core.errors import VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.memory.timeline import TIMELINE_COMPONENTS, timeline
from vramcalc.core.params import inventory
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets

# Every model preset with an architecture (count-only presets train `full` only).
ALL_MODELS = [s for s in presets.models().specs if isinstance(s, ModelSpec)]

# One setting per row: the three methods and freeze, checkpointing on and off, eager attention, autocast
# (per-layer weight copies), gradient accumulation (gradients alive in forward), ZeRO-3 and DDP sharding.
SETTINGS: list[dict[str, Any]] = [
    {"method": "full"},
    {"method": "full", "grad_checkpointing": True},
    {"method": "lora"},
    {"method": "lora", "grad_checkpointing": True, "lora_targets": ("all-linear",)},
    {"method": "qlora", "grad_checkpointing": True},
    {"method": "qlora", "attention": "eager", "batch_size": 2},
    {"method": "freeze", "freeze_layers": 2},
    {"method": "freeze", "freeze_layers": 2, "grad_checkpointing": True, "train_head": False},
    {"method": "full", "precision": "amp-bf16", "optimizer_impl": "foreach"},
    {"method": "full", "precision": "amp-bf16", "grad_checkpointing": True},
    {"method": "full", "grad_accum": 4, "optimizer": "adamw-8bit"},
    {"method": "full", "precision": "mixed-bf16", "gpus_per_node": 8, "zero": 3},
    {"method": "full", "gpus_per_node": 2},
    {"mode": "inference", "seq_len": 4096, "batch_size": 2},
    # memory savers with moments of their own (memory/moments.py): the head's gradient in forward and the
    # head's backward of a chunked loss, the head's optimizer step in backward, offloaded layers
    {"method": "full", "loss": "fused-linear", "seq_len": 2048},
    {"method": "full", "loss": "chunked", "grad_checkpointing": True},
    {"method": "full", "optimizer_in_bwd": True},
    {"method": "lora", "activation_offload": True, "grad_checkpointing": True, "ac_every": 2},
]


def _check(model: ModelSpec, t: TrainingSpec) -> None:
    try:
        b = estimate(model, t)
    except VramcalcError:  # the core refuses the run (LoRA on v_proj of an MLA model, a sequence beyond
        return            # learned position embeddings: core/checks.py): nothing to compare
    tl = timeline(model, t)
    totals = [p.total_bytes for p in tl.points]
    assert max(totals) == b.tensor_peak_bytes
    for phase, peak in b.phases.items():
        assert max(p.total_bytes for p in tl.points if p.phase == phase) == peak, phase
    assert {p.phase for p in tl.points} == set(b.phases)
    for p in tl.points:
        assert list(p.components) == list(TIMELINE_COMPONENTS)
        assert all(isinstance(v, int) and v >= 0 for v in p.components.values()), p
    assert tl.points[tl.peak_index].total_bytes == b.tensor_peak_bytes
    if t.mode == "train":  # every moment of the core is an exact point, component by component
        exact = [p.components for p in tl.points if p.exact]
        for mo in b.named_moments():
            # an end of backward with no gradient being summed is the bottom layer's moment less its terms
            if mo.key != "backward.end" or mo.terms[-1].bytes:
                assert {c: mo.component(c) for c in TIMELINE_COMPONENTS} in exact, mo.key


@pytest.mark.parametrize(("model", "settings"), list(itertools.product(ALL_MODELS, SETTINGS)),
                         ids=[f"{m.name}-{i}" for m, i in itertools.product(ALL_MODELS, range(len(SETTINGS)))])
def test_maxima_equal_the_core(model: ModelSpec, settings: dict[str, Any]) -> None:
    if not model.has_architecture and (settings.get("method", "full") != "full"):
        pytest.skip("count-only preset: the core accepts --method full only")
    _check(model, TrainingSpec(**settings))


@given(
    model=st.sampled_from([m for m in ALL_MODELS if m.has_architecture]),
    method=st.sampled_from(["full", "lora", "qlora", "freeze"]),
    checkpointing=st.booleans(),
    precision=st.sampled_from(["bf16", "pure-bf16", "amp-bf16", "mixed-fp16", "fp32"]),
    batch_size=st.integers(1, 16),
    seq_len=st.integers(1, 8192),
    grad_accum=st.sampled_from([1, 2]),
    attention=st.sampled_from(["sdpa", "eager"]),
    freeze_layers=st.integers(0, 4),
)
def test_maxima_equal_the_core_property(model: ModelSpec, method: str, checkpointing: bool, precision: str,
                                        batch_size: int, seq_len: int, grad_accum: int, attention: str,
                                        freeze_layers: int) -> None:
    extra = {"freeze_layers": freeze_layers} if method == "freeze" else {}
    t = TrainingSpec(method=method, grad_checkpointing=checkpointing, precision=precision,  # type: ignore[arg-type]
                     batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum, attention=attention,
                     **extra)
    _check(model, t)


def test_labels_and_order_mistral_full() -> None:
    # mistral-7b has 32 decoder layers (presets/models/mistral.yaml num_hidden_layers: 32).
    tl = timeline(presets.find_model("mistral-7b"), TrainingSpec())
    labels = [p.label for p in tl.points]
    assert labels[:2] == ["forward layer 1", "forward layer 2"]
    # (full fine-tuning: the final RMSNorm's fp32 backward before the top layer's, memory/__init__.py)
    assert labels[31:35] == ["forward layer 32", "loss", "loss backward", "final norm backward"]
    assert labels[35] == "backward layer 32" and labels[66] == "backward layer 1"
    assert labels[-1] == "optimizer step"
    # README's example: the peak of mistral-7b full bf16 is in backward (86.90 GB), at its end: every gradient
    # (14.48 GB) outweighs every saved set (3.37 GB of activations), and the bottom layer's moment holds neither the
    # untied embedding's gradient (131,072,000 x 2 B, written last) nor its own layer's save down_proj's (218,112,000
    # - 58,720,256 x 2 B missing) beside its saved set less down_proj's input (88 MB): the end, every gradient and
    # the embedding's incoming one (512 x 4,096 x 2 B), is larger.
    assert tl.points[tl.peak_index].label == "backward end (embedding gradient)"
    assert tl.points[tl.peak_index].total_bytes == estimate(presets.find_model("mistral-7b"),
                                                            TrainingSpec()).tensor_peak_bytes


def test_forward_grows_and_backward_releases_activations() -> None:
    tl = timeline(presets.find_model("qwen2.5-0.5b"), TrainingSpec(batch_size=4, seq_len=1024))
    fwd = [p.components["activations"] for p in tl.points if p.label.startswith("forward layer")]
    bwd = [p.components["activations"] for p in tl.points if p.label.startswith("backward layer")]
    assert fwd == sorted(fwd) and fwd[0] < fwd[-1]
    assert bwd == sorted(bwd, reverse=True) and bwd[0] > bwd[-1]
    grads = [p.components["gradients"] for p in tl.points if p.label.startswith("backward layer")]
    # the bottom layer's own gradients are written through its backward (memory/__init__.py
    # _dense_late_gradient_bytes): every gradient but that layer's (bf16) at the last backward layer, down_proj's
    # excepted (written before the MLP's product node, _mlp_node), all at the end
    m = presets.find_model("qwen2.5-0.5b")
    total = estimate(m, TrainingSpec(batch_size=4, seq_len=1024)).gradients
    layer = 2 * sum(x.numel for x in inventory(m) if x.per_layer) // m.num_layers
    down = 2 * sum(x.numel for x in inventory(m) if x.per_layer and x.module == "down_proj") // m.num_layers
    assert grads == sorted(grads) and grads[-1] == total - layer + down
    assert [p.components["gradients"] for p in tl.points if p.label.startswith("backward end")] == [total]


def test_inference_has_prefill_and_decode() -> None:
    t = TrainingSpec(mode="inference", seq_len=8192, batch_size=4)
    tl = timeline(presets.find_model("llama-3.1-8b"), t)
    assert [p.label for p in tl.points] == ["prefill", "decode"]
    b = estimate(presets.find_model("llama-3.1-8b"), t)
    assert tl.points[0].components["kv_cache"] == b.kv_cache > 0


def test_count_only_preset_has_the_three_phases() -> None:
    # a parameter count only (resnet-50 was one until issue 15; 25,557,032 is torchvision's num_params for it)
    tl = timeline(ModelSpec(name="count-only", source="tests/test_timeline.py", parameters=25_557_032), TrainingSpec())
    assert [p.label for p in tl.points] == ["forward", "backward", "optimizer step"]
