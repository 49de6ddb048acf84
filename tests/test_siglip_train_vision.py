"""Gemma 3's SigLIP tower trained whole (--train-vision) where its backward is the peak: google/gemma-3-4b-it's tower
(cut to 2 layers) under a toy language model (memory/vision.py _siglip_estimate; benchmarks/accuracy.py --grid vlm2,
the "toy-lm | ... train-vision" cases). At a layer's gelu the tower's gradients are post_layernorm's, the layers'
above and the layer's own fc2's; the trained tower's forward holds the saved sets and one output + residual sum."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vramcalc.core.memory import estimate
from vramcalc.core.params import vision_tower_params
from vramcalc.core.specs import ModelSpec, TrainingSpec

HF = Path(__file__).parent / "data" / "hf"
SHAPE = {"batch_size": 1, "seq_len": 128, "images": 1, "precision": "pure-bf16"}
RUNS = {"full": {"method": "full"},
        "frozen-lm": {"method": "freeze", "train_layers": (), "train_modules": ("projector",)}}


def toy() -> ModelSpec:
    """benchmarks/accuracy.py's gemma3vlm-toy:gemma-3-4b-it:2: the published tower cut to 2 layers, the language model
    a toy (2 layers, width 256, 1,000-token vocabulary)."""
    from vramcalc.io.hf_config import spec_from_hf_config

    path = HF / "gemma-3-4b-it.json"
    spec = spec_from_hf_config(json.loads(path.read_text()), "gemma-3-4b-it", str(path))
    assert spec.vision is not None
    return replace(spec, num_layers=2, sliding_window_layers=1, hidden_size=256, intermediate_size=512,
                   num_attention_heads=4, num_kv_heads=2, head_dim=64, vocab_size=1000,
                   vision=replace(spec.vision, num_layers=2))


def _gradients_at(b: Any, key: str) -> int:
    moment = next(x for x in b.named_moments() if x.key == key)
    return sum(x.bytes for x in moment.terms if x.name == "gradients")


@pytest.mark.parametrize("gc", [False, True], ids=["no-gc", "gc"])
def test_tower_backward_counts_the_gradients_autograd_has_made(gc: bool) -> None:
    # the peak is the tower's backward; its gradients there: the text side's (everything trainable but the tower,
    # which the frozen-tower estimate counts) plus post_layernorm's (2 x 1,152) and fc2's (4,304 x 1,152 + 1,152) at
    # the top layer, + one whole layer (4 x (1,152^2 + 1,152) + 4 x 1,152 + 2 x 4,304 x 1,152 + 4,304 + 1,152) at the
    # bottom one; 2 B each (pure-bf16). Not the whole tower: its patch and position embeddings come last.
    m = toy()
    assert m.vision is not None
    t = TrainingSpec(**SHAPE, **RUNS["full"], train_vision=True, grad_checkpointing=gc)  # type: ignore[arg-type]
    b = estimate(m, t)
    assert b.peak_phase == "backward"
    text = estimate(m, replace(t, train_vision=False)).gradients
    fc2, post_ln = 4304 * 1152 + 1152, 2 * 1152
    layer = 4 * (1152 * 1152 + 1152) + 4 * 1152 + 4304 * 1152 + 4304 + fc2
    expected = text + 2 * (post_ln + fc2 + (layer if gc else 0))  # with checkpointing the bottom layer is the peak
    assert _gradients_at(b, "backward.vision") == expected
    assert expected < text + 2 * vision_tower_params(m.vision)


@pytest.mark.parametrize(("run", "gc"), [("full", False), ("frozen-lm", True)], ids=["full-no-gc", "frozen-lm-gc"])
def test_matches_the_trace(run: str, gc: bool) -> None:
    # measured when written: full no-gc -0.04 %, frozen-lm gc -0.10 % (both +6.05 % / +6.76 % before: the whole top
    # layer's or tower's gradients and a frozen layer's forward transients over the saved set counted)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = toy()
    t = TrainingSpec(**SHAPE, **RUNS[run], train_vision=True, grad_checkpointing=gc)  # type: ignore[arg-type]
    r, b = trace(m, t), estimate(m, t)
    assert r.peak_phase == b.peak_phase == "backward"
    assert abs(b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.005
