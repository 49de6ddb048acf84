"""Eager attention on fp32 weights (issue 15, --grid eager32): the backward's fp32 score gradients and the MLP and
o_proj weight gradients written beside them, by hand. Against the tracer: benchmarks/results/accuracy_eager32.md."""

from __future__ import annotations

from dataclasses import replace

from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.specs import ModelSpec, TrainingSpec

# A small llama (hidden 256, intermediate 512, 4 heads / 2 kv heads of 64, vocab 32,000): q_dim 256, kv_dim 128.
SMALL = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                  intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2)
FP32 = TrainingSpec(method="full", precision="fp32", attention="eager", batch_size=1, seq_len=512)
# the MLP's (gate, up, down: 3 x 256 x 512) and o_proj's (256 x 256) weights: their gradients (and autocast copies)
MLP_O = 3 * 256 * 512 + 256 * 256


def _layer(t: TrainingSpec, m: ModelSpec = SMALL, trainable: bool = True):  # type: ignore[no-untyped-def]
    return layer_activations(m, t, recipe_of(t), trainable, True)


def test_fp32_eager_backward_by_hand() -> None:
    layer = _layer(FP32)
    # saved: the fp32 softmax output, which is the probabilities too (`.to(float32)` a no-op), 4 B per head (4) per key
    assert {x.name: x.per_token_seq for x in layer.terms}["eager scores (softmax output = probs)"] == 4 * 4
    # backward: matmul's gradient of the probabilities and _softmax_backward_data's result, two fp32 score tensors
    assert layer.backward_transient.per_token_seq == 2 * 4 * 4
    # the MLP's and o_proj's fp32 weight gradients, made before the attention's backward
    assert layer.attn_backward_const == 4 * MLP_O
    assert _layer(FP32, trainable=False).attn_backward_const == 0  # LoRA: the frozen layer writes no gradient


def test_amp_eager_backward_by_hand() -> None:
    for precision in ("amp-bf16", "amp-fp16"):
        layer = _layer(replace(FP32, precision=precision))
        # saved: fp32 softmax (4 B) and the 16-bit probabilities (2 B) per head per key; backward: the gradient's fp32
        # upcast and the fp32 result beyond, the 16-bit probabilities freed: 8 - 2 B per head per key
        assert {x.name: x.per_token_seq for x in layer.terms}["eager scores (fp32 softmax + 16-bit probs)"] == 6 * 4
        assert layer.backward_transient.per_token_seq == (8 - 2) * 4
        # fp32 gradients written, the 16-bit autocast copies of the same weights freed with their matmuls' saves
        assert layer.attn_backward_const == (4 - 2) * MLP_O


def test_16_bit_weights_unchanged_and_gpt2_fp32() -> None:
    # pure bf16 eager: (8 - 2) B per head per key beyond the saved set, no weight gradients counted there
    bf16 = _layer(replace(FP32, precision="pure-bf16"))
    assert bf16.backward_transient.per_token_seq == 6 * 4 and bf16.attn_backward_const == 0
    # GPT-2's eager (softmax in the scores' dtype, attention dropout): hidden 256, 4 heads, MLP 1,024
    gpt2 = ModelSpec(name="small-gpt2", source="test", family="gpt2", vocab_size=1_000, hidden_size=256,
                     intermediate_size=1024, num_layers=2, num_attention_heads=4, num_kv_heads=4, mlp="plain",
                     hidden_act="gelu_new", norm="layernorm", learned_position_embeddings=True,
                     max_position_embeddings=1024, dropout=0.1)
    # fp32: saved softmax, mask, dropped probs (4 + 1 + 4 B per head per key); matmul's / dropout's backward hold the
    # incoming fp32 gradient and their result, the dropped copy freed: 4 B beyond; c_fc, c_proj (256 x 1,024 each)
    # and the attention's c_proj (256 x 256) fp32 weight gradients written
    layer = _layer(FP32, gpt2)
    assert {x.name: x.per_token_seq for x in layer.terms}["eager scores (softmax, dropout mask, dropped probs)"] \
        == (4 + 1 + 4) * 4
    assert layer.backward_transient.per_token_seq == 4 * 4
    assert layer.attn_backward_const == 4 * (256 * 256 + 2 * 256 * 1024)
    # bf16 keeps its measured (4 + 2 c) B per head per key
    assert _layer(replace(FP32, precision="pure-bf16"), gpt2).backward_transient.per_token_seq == (4 + 2 * 2) * 4
