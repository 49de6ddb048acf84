"""The estimator against the tracer (issue #3) on two small runs: tensor peak within 10 %, same phase.

The figures compared are `Breakdown.tensor_peak_bytes` (pure arithmetic) and `TraceResult.peak_bytes`
(one steady-state HF transformers step under FakeTensorMode); benchmarks/accuracy.py runs the full grid.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from vramcalc.core.memory import estimate  # noqa: E402
from vramcalc.core.specs import TrainingSpec  # noqa: E402
from vramcalc.io import presets  # noqa: E402

CASES = {
    # full fine-tune, pure bf16 (bf16 AdamW states), GPT-2's dropout and gelu_new, tied head
    "gpt2-full-pure-bf16": ("gpt2", TrainingSpec(method="full", precision="pure-bf16", batch_size=1, seq_len=128)),
    # peft LoRA on q,v with fp32 adapters and non-reentrant checkpointing (transformers' default)
    "qwen2.5-0.5b-lora-gc": ("qwen2.5-0.5b", TrainingSpec(method="lora", precision="bf16", batch_size=1, seq_len=128,
                                                          grad_checkpointing=True)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_estimate_matches_trace(case: str) -> None:
    from vramcalc.trace import trace

    name, training = CASES[case]
    model = presets.find_model(name)
    got = estimate(model, training)
    ref = trace(model, training)
    err = abs(got.tensor_peak_bytes - ref.peak_bytes) / ref.peak_bytes
    assert err <= 0.10, f"{case}: estimate {got.tensor_peak_bytes:,} vs trace {ref.peak_bytes:,} ({100 * err:.1f} %)"
    assert got.peak_phase == ref.peak_phase
