"""Without checkpointing, a forward peak at an up-projection adapter's path (peft's base output, lora_B's output and its
scaled copy: intermediate-wide, in the adapter dtype) comes before the top layer's down_proj input is saved
(core/memory/activations.py forward_unmade_per_token; memory/__init__.py's forward.layer moment)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vramcalc.core.memory import activations as act
from vramcalc.core.memory import estimate
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets


def _cut() -> object:
    return replace(presets.find_model("qwen2.5-0.5b"), num_layers=4, vocab_size=2_048)


def _qlora(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{"method": "qlora", "precision": "bf16", "batch_size": 1, "seq_len": 1024,
                           "lora_targets": ("all-linear",), **kw})


def test_the_unmade_tail_is_down_projs_saved_input() -> None:
    # QLoRA all-linear (kbit prep: fp32 adapters, fp32 norms): up_proj's adapter path is (2 + 2 x 4) B x 4,864 =
    # 48,640 B per token, over the gated MLP's 3 x 2 x 4,864; down_proj's saved input is its fp32 adapter copy and
    # lora_A's fp32 output: 4 x 4,864 + 4 x 16 = 19,520 B per token, the only term after it
    m, t = _cut(), _qlora()
    layer = act.layer_activations(m, t, recipe_of(t), False)
    assert layer.forward_transient.per_token == 48_640
    assert layer.forward_unmade_per_token == 19_520
    # targets that leave the MLP alone: the widest forward transient is not an up-projection adapter
    assert act.layer_activations(m, _qlora(lora_targets=("q_proj", "v_proj")), recipe_of(t),
                                 False).forward_unmade_per_token == 0


def test_matches_the_trace() -> None:
    # measured: the trace's forward peak at the top layer's up_proj scaling mul, 411,462,656 B; the estimate's
    # forward.layer was 437,692,240 B (+6.4 %, the step's peak +5.96 %) with every layer's whole saved set,
    # 417,703,760 B now; the step's peak is the backward's (+1.58 %)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = _cut(), _qlora()
    e, r = estimate(m, t), trace(m, t)
    assert -0.01 <= e.phases["forward"] / r.phase_peaks["forward"] - 1 <= 0.02, (e.phases, r.phase_peaks)
    assert -0.01 <= e.tensor_peak_bytes / r.peak_bytes - 1 <= 0.02, (e.phases, r.phase_peaks, r.peak_op)
