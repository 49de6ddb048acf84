"""GPT-2's gelu_new backward under amp-* (memory/activations.py mlp_bwd): pow is on autocast's fp32 list whatever the
weights' dtype, so the final mul's gradients are fp32 under amp-bf16 as under autocast-bf16 (traced:
benchmarks/results/accuracy_autocast.md, dequant:gpt2 lora amp-bf16 b2 s1024 with checkpointing, -5.99 % with 16-bit
ones, +4.06 % now)."""

from __future__ import annotations

from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets


def test_gelu_new_mul_gradients_are_fp32_under_any_autocast() -> None:
    gpt2 = presets.find_model("gpt2")  # hidden 768, n_inner 3072 (4 x hidden), gelu_new (tests/data/hf/gpt2.json)
    got = {}
    for precision in ("bf16", "amp-bf16", "autocast-bf16"):
        t = TrainingSpec(method="lora", precision=precision, batch_size=2, seq_len=1024, grad_checkpointing=True,
                         lora_targets=("all-linear",))
        got[precision] = layer_activations(gpt2, t, recipe_of(t), trainable_weights=False).backward_transient.per_token
    # the incoming gradient and both factors' (3 x 3072 wide), beside the 16-bit block input's gradient (768)
    assert got["bf16"] == 3 * 2 * 3072 + 2 * 768
    assert got["amp-bf16"] == got["autocast-bf16"] == 3 * 4 * 3072 + 2 * 768
