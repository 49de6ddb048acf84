"""peft's lora_dropout under gradient checkpointing: a known under-estimate, kept visible (issue 15 accuracy bar).

peft tuners/lora/layer.py Linear.forward runs `lora_B(lora_A(dropout(x)))` on x cast to the adapter dtype: with
p > 0 each adapted Linear keeps native_dropout's output and its 1-byte mask instead of the cast (core/memory/
activations.py counts the mask per adapted input). Without checkpointing the estimate is within +0.8 % of the trace on
a layer-dominated toy; with checkpointing the recomputed layer's backward holds more than the estimate counts.
"""

from __future__ import annotations

import pytest

from test_unsloth import SEVEN, SMALL
from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.trace import trace


def _run(gc: bool) -> TrainingSpec:
    return TrainingSpec(method="lora", precision="bf16", lora_targets=SEVEN, batch_size=2, seq_len=512,
                        grad_checkpointing=gc, lora_dropout=0.05)


def test_dropout_without_checkpointing_is_within_the_bar() -> None:
    # measured: estimate 133.93 MB vs trace 133.01 MB (+0.69 %), the loss's backward the peak in both
    e, r = estimate(SMALL, _run(False)), trace(SMALL, _run(False))
    assert -0.02 <= e.tensor_peak_bytes / r.peak_bytes - 1 <= 0.05


@pytest.mark.xfail(strict=True, reason="known: with checkpointing the recomputed layer's backward holds fp32 dropout "
                   "outputs, masks and input casts beyond the estimate's (47.02 MB vs trace 50.04 MB, -6.04 %, peak at "
                   "down_proj's LoRA backward mm); not modelled yet")
def test_dropout_with_checkpointing_is_within_the_bar() -> None:
    e, r = estimate(SMALL, _run(True)), trace(SMALL, _run(True))
    assert -0.02 <= e.tensor_peak_bytes / r.peak_bytes - 1 <= 0.05
