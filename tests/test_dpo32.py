"""Full DPO with an fp32 policy (issue 13, --grid dpo32): sdpa's math path on fp32 grouped-query attention and TRL's
fused head under autocast, by hand. Against the tracer: benchmarks/results/accuracy_dpo32.md."""

from __future__ import annotations

from dataclasses import replace

from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.specs import ModelSpec, TrainingSpec

# A small llama (hidden 256, intermediate 512, 4 heads / 2 kv heads of 64, vocab 32,000): q_dim 256, kv_dim 128.
SMALL = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                  intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2)
FP32 = TrainingSpec(objective="dpo", method="full", precision="fp32", batch_size=1, seq_len=512, prompt_len=128)


def _terms(t: TrainingSpec, m: ModelSpec = SMALL) -> dict[str, tuple[int, int]]:
    layer = layer_activations(m, t, recipe_of(t), True, True)
    return {x.name: (x.per_token, x.per_token_seq) for x in layer.terms}


def test_fp32_gqa_sdpa_saves_the_math_path() -> None:
    terms = _terms(FP32)
    # aten _scaled_dot_product_attention_math with enable_gqa (under saved_tensors_hooks on CPU): q scaled, k and v
    # repeated to every head, 3 x 4 B x q_dim (256) per token, and the fp32 softmax, 4 B per head (4) per key
    assert terms["sdpa math backend q, k, v (fp32, expanded)"] == (3 * 4 * 256, 0)
    assert terms["sdpa math backend softmax (fp32)"] == (0, 4 * 4)
    assert "sdpa q, k, v, out, logsumexp" not in terms


def test_math_path_backward_by_hand() -> None:
    layer = layer_activations(SMALL, FP32, recipe_of(FP32), True, True)
    # two fp32 score tensors (the probabilities' gradient and the scores'), 4 B per head per key each
    assert layer.backward_transient.per_token_seq == 2 * 4 * 4
    # the MLP's (gate, up, down: 3 x 256 x 512) and o_proj's (256 x 256) fp32 weight gradients, made before it
    assert layer.attn_backward_const == 4 * (3 * 256 * 512 + 256 * 256)
    frozen = layer_activations(SMALL, FP32, recipe_of(FP32), False, True)
    assert frozen.attn_backward_const == 0


def test_flash_or_efficient_where_cuda_has_one() -> None:
    # 16-bit q, k, v: flash; amp-bf16: autocast casts sdpa's inputs to bf16 (flash); no GQA: memory-efficient takes
    # fp32; packed rows: transformers repeats k and v for the 4-D mask (memory-efficient)
    mha = replace(SMALL, num_kv_heads=4)
    for t, m in ((replace(FP32, precision="pure-bf16"), SMALL), (replace(FP32, precision="amp-bf16"), SMALL),
                 (FP32, mha), (replace(FP32, objective="sft", prompt_len=0, packing="packed"), SMALL)):
        assert "sdpa math backend softmax (fp32)" not in _terms(t, m), (t.precision, m.num_kv_heads)


def _autocast_copies(t: TrainingSpec) -> list[int]:
    b = estimate(SMALL, t)
    return [dict(zip([p[0] for p in parts], vals, strict=True)).get("autocast weight copies", -1)
            for name, parts, vals in b.moments if name in ("forward.layer", "forward.loss")]


def test_fused_head_keeps_no_autocast_head_copy() -> None:
    amp = replace(FP32, precision="amp-bf16")
    # block Linears per layer: q, o 256 x 256, k, v 128 x 256, gate, up, down 256 x 512; 2 layers, bf16 copies
    layers = 2 * 2 * (2 * 256 * 256 + 2 * 128 * 256 + 3 * 256 * 512)
    # TRL's fused head casts weight[start:end] itself (trl/kernels/chunked_logprob.py): not autocast-cached
    assert _autocast_copies(amp) == [layers, layers]
    # transformers' lm_head under autocast (sft, --loss hf): its 32,000 x 256 bf16 cast is cached from the head on
    sft = replace(amp, objective="sft", prompt_len=0, loss="hf")
    assert _autocast_copies(sft) == [layers, layers + 2 * 32_000 * 256]


def test_math_path_is_noted() -> None:
    noted = [n for n in estimate(SMALL, FP32).notes if n.startswith("sdpa on fp32 with grouped kv heads")]
    assert len(noted) == 1 and "padding" in noted[0]
    assert not [n for n in estimate(SMALL, replace(FP32, precision="pure-bf16")).notes if n.startswith("sdpa on fp32")]
