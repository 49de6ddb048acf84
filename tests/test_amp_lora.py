"""LoRA under the Trainer's autocast over fp32 weights (--precision amp-bf16: an fp32 residual stream, which the
pre-norms save as it is), and BLOOM's ALiBi attention scores (core/memory/activations.py saves_residual,
_alibi_forward_scores; --grid amp)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.memory import activations as act
from vramcalc.core.memory import estimate
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"


def _cut(config: str) -> ModelSpec:
    """A published config.json cut to 4 layers and a 2,048-token vocabulary (benchmarks/accuracy.py "hfcut:")."""
    path = HF / f"{config}.json"
    return replace(spec_from_hf_config(json.loads(path.read_text()), config, str(path)), num_layers=4,
                   vocab_size=2_048)


def _lora(precision: str, gc: bool, **kw: object) -> TrainingSpec:
    return TrainingSpec(**{"method": "lora", "lora_targets": ("all-linear",), "precision": precision,
                           "batch_size": 2, "seq_len": 1024, "grad_checkpointing": gc, **kw})


@pytest.mark.parametrize(("c", "amp", "compute", "gc", "expected"), [
    # bf16: at _softmax baddbmm (2) + masked (2) + fp32 copy (4) + output (4) = 12 B per head per key, less the saved
    # 4 + 2; checkpointed, the previous layer's returned probabilities (2) beside them
    (2, False, "bf16", False, 6), (2, False, "bf16", True, 8),
    # amp-bf16: the masked scores fp32 (the fp32 mask), no copy; at the cast 2 + 4 + 4 + 2 = 12, less 6
    (2, True, "bf16", False, 6), (2, True, "bf16", True, 8),
    # fp16: the upcast fused into the softmax: at the cast 2 + 2 + 4 + 2 = 10, less 6
    (2, False, "fp16", False, 4),
    # fp32: the probabilities are the softmax output: 4 + 4 + 4 = 12, less the saved 4; checkpointed + 4
    (4, False, "fp32", False, 8), (4, False, "fp32", True, 12),
])
def test_alibi_scores_arithmetic(c: int, amp: bool, compute: str, gc: bool, expected: int) -> None:
    assert act._alibi_forward_scores(c, amp, compute, gc) == expected


def test_fp32_residual_saved_by_the_norms() -> None:
    # amp and fp32 runs keep an fp32 residual stream the norms save as it is; a 16-bit one they copy
    m = _cut("qwen3-0.6b")
    assert act.saves_residual(m, recipe_of(_lora("amp-bf16", True)))
    assert act.saves_residual(m, recipe_of(_lora("fp32", True)))
    assert not act.saves_residual(m, recipe_of(_lora("bf16", True)))


@pytest.mark.parametrize(("config", "precision", "gc"), [
    # measured: -3.22 % (qwen3 amp-bf16 gc: the fp32 layer input, post-attention residual and embeddings' output
    # each counted twice, the fp32 incoming gradient as 16-bit), -10.39 % (BLOOM bf16 gc: two of its five score
    # tensors and the previous layer's returned probabilities missing), -13.80 % (Pythia amp-bf16 gc) before; the
    # committed --grid amp numbers are -0.17 %, +0.66 % and +0.05 %
    ("qwen3-0.6b", "amp-bf16", True),
    ("bloom-560m", "bf16", True),
    ("pythia-70m", "amp-bf16", True),
    # without checkpointing, a gelu_new MLP's last mul is the top layer's backward peak, after fc_out's backward
    # freed its input and weight casts (activations.py act_node), and layer 0 saves no cast for a Linear whose input
    # needs no gradient (memory/__init__.py _bottom_unsaved_casts): gpt-j-6b +4.30 % and phi-2 +3.52 % before,
    # --grid amp now +0.07 % and +0.41 %
    ("gpt-j-6b", "amp-bf16", False),
    ("phi-2", "amp-bf16", False),
    # the same layer 0 casts had hidden the embeddings' fp32 output, which no norm saves there (its input needs no
    # gradient) but LlamaModel.forward's inputs_embeds keeps alive through the layers (forward.layer): -1.07 % with
    # the casts dropped and it uncounted, --grid amp now -0.23 %
    ("tinyllama-1.1b", "amp-bf16", False),
    # with checkpointing the rerun's end is the traced peak (backward.rerun_end) and the node, its casts freed, the
    # estimate's: +3.07 % before, --grid amp now +1.02 %
    ("gpt-j-6b", "amp-bf16", True),
])
def test_matches_the_trace(config: str, precision: str, gc: bool) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = _cut(config), _lora(precision, gc)
    e, r = estimate(m, t), trace(m, t)
    assert -0.01 <= e.tensor_peak_bytes / r.peak_bytes - 1 <= 0.02, (e.phases, r.phase_peaks, r.peak_op)


@pytest.mark.parametrize(("config", "targets", "expected"), [
    # GPT-J's parallel block: q, k, v (3 x 4096 x 4096) and fc_in (16384 x 4096) read the layer's input, 117,440,512
    # weights cast to bf16 (the tracer's live tensors: layer 0 holds only its o_proj and fc_out casts)
    ("gpt-j-6b", ("all-linear",), 2 * (3 * 4096 * 4096 + 16384 * 4096)),
    # tinyllama (sequential): q (2048 x 2048), k and v (256 x 2048 each) only; the MLP's input is the attention's
    # output, which needs a gradient through q / k / v's adapters (the tracer: layer 0 lacks one (2048, 2048) and two
    # (256, 2048) bf16 casts, 10,485,760 B)
    ("tinyllama-1.1b", ("all-linear",), 2 * (2048 * 2048 + 2 * 256 * 2048)),
    ("tinyllama-1.1b", ("q_proj", "v_proj"), 2 * (2048 * 2048 + 2 * 256 * 2048)),
    # only down_proj adapted: nothing before it needs a gradient, so no frozen Linear of layer 0 saves its cast
    # (q, k, v, o 2048-wide as above; gate, up 5632 x 2048 and down 2048 x 5632)
    ("tinyllama-1.1b", ("down_proj",), 2 * (2 * 2048 * 2048 + 2 * 256 * 2048 + 3 * 5632 * 2048)),
])
def test_bottom_layer_casts_not_saved(config: str, targets: tuple[str, ...], expected: int) -> None:
    from vramcalc.core.memory import _bottom_unsaved_casts

    m, t = _cut(config), _lora("amp-bf16", False, lora_targets=targets)
    assert _bottom_unsaved_casts(m, t, recipe_of(t)) == expected
    # the estimate's autocast copies at the backward's start: every block Linear's and the head's bf16 cast (2,048 x
    # hidden), less that set
    from vramcalc.core.params import block_linears

    every = 2 * (sum(x.in_features * x.out_features * x.count for x in block_linears(m)) + 2_048 * m.hidden_size)
    start = next(mo for mo in estimate(m, t).named_moments() if mo.key == "backward.start")
    assert next(x.bytes for x in start.terms if x.name == "autocast weight copies") == every - expected


def test_the_rerun_end_is_a_moment_of_its_own() -> None:
    # gpt-j-6b cut, LoRA all-linear amp-bf16 b2 s1024 with checkpointing: the tracer's peak, 4,843,398,144 B, is the
    # rerun's last cast (fc_out's lora_A input) with the gelu's fp32 output alive; backward.rerun_end counts the whole
    # recomputed set, its casts and 4 x 16,384 + (8 + 4 x 2) x 4,096 B per token of unsaved tensors (activations.py
    # rerun_end): 4,841,267,200 B, within 0.05 % of it
    m, t = _cut("gpt-j-6b"), _lora("amp-bf16", True)
    moments = {mo.key: mo for mo in estimate(m, t).named_moments()}
    end = moments["backward.rerun_end"]
    assert next(x.bytes for x in end.terms if x.name == "layer forward temporaries") == \
        (4 * 16_384 + (8 + 4 * 2) * 4_096) * 2 * 1024
    assert abs(end.total / 4_843_398_144 - 1) < 0.0005
    # not over 16-bit weights, nor without checkpointing
    assert "backward.rerun_end" not in {mo.key for mo in estimate(m, _lora("autocast-bf16", True)).named_moments()}
    assert "backward.rerun_end" not in {mo.key for mo in estimate(m, _lora("amp-bf16", False)).named_moments()}
