"""Routed MoE under transformers 5: 3-D expert Parameters, peft's ParamWrapper targets, bitsandbytes' QLoRA.

transformers 5.24 stores Mixtral's / Qwen-MoE's experts as gate_up_proj (E, 2i, h) and down_proj (E, h, i)
Parameters (integrations/moe.py) and the router as a custom module; peft 0.21 rewrites LoRA targets of the model
types transformers' conversion mapping names (utils/transformers_weight_conversion.py), and bitsandbytes quantizes
nn.Linear modules only. Every count below is derived from those shapes and was checked against peft on the meta
device (get_peft_model(..., LoraConfig(r, target_modules="all-linear")), the trainable tensors' shapes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.memory.weights import weight_bytes
from vramcalc.core.params import lora_params, resolve_targets
from vramcalc.core.specs import TrainingSpec
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
# hidden 64, 1 layer, 4 heads / 2 kv heads (head_dim 16), 4 experts top 2, the experts 128 (Mixtral) / 32 wide
TINY = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "num_local_experts": 4, "num_experts": 4, "num_experts_per_tok": 2, "vocab_size": 100, "head_dim": 16}


def tiny(config: str, **extra: object):
    d = {**json.loads((HF / f"{config}.json").read_text()), **TINY, **extra}
    return spec_from_hf_config(d, config, "tests/test_moe_experts.py")


MIXTRAL = ("mixtral-8x7b-v0.1", {"intermediate_size": 128})
QWEN3 = ("qwen3-30b-a3b", {"moe_intermediate_size": 32, "intermediate_size": 128})
QWEN2 = ("qwen1.5-moe-a2.7b", {"moe_intermediate_size": 32, "shared_expert_intermediate_size": 96,
                               "intermediate_size": 128})


def _attention(r: int) -> int:
    # q (64 -> 64), k and v (64 -> 32), o (64 -> 64): r x (in + out) each
    return r * ((64 + 64) + 2 * (64 + 32) + (64 + 64))


@pytest.mark.parametrize(("case", "i"), [(MIXTRAL, 128), (QWEN3, 32)])
def test_all_linear_adapts_the_expert_stacks_and_the_router(case, i) -> None:
    m, r, e = tiny(case[0], **case[1]), 4, 4
    # peft's measured shapes (r 4): experts.gate_up_proj lora_A (2r·E, h) = (32, 64), lora_B (2i, 2r·E);
    # experts.down_proj lora_A (r·E, i), lora_B (h, r·E); gate.weight lora_A (r, h) = (4, 64), lora_B (E, r) = (4, 4)
    experts = 2 * r * e * (64 + 2 * i) + r * e * (i + 64)
    router = r * (64 + e)
    assert lora_params(m, ("all-linear",), r) == _attention(r) + experts + router
    modules = [lin.module for lin in resolve_targets(m, ("all-linear",))]
    assert modules == ["q_proj", "k_proj", "v_proj", "o_proj", "experts.gate_up_proj", "experts.down_proj", "router"]


def test_qwen2_moe_experts_are_not_adapted() -> None:
    # qwen2_moe is no key of transformers' _MODEL_TO_CONVERSION_PATTERN: peft leaves its experts and router alone
    # and all-linear takes the attention, the shared expert's Linears and shared_expert_gate (Linear(h, 1)).
    m, r = tiny(QWEN2[0], **QWEN2[1]), 4
    shared = r * (64 + 96) * 2 + r * (96 + 64)
    assert lora_params(m, ("all-linear",), r) == _attention(r) + shared + r * (64 + 1)
    assert not [lin for lin in resolve_targets(m, ("all-linear",)) if lin.module.startswith("experts.")]


def test_gate_or_up_alone_is_refused_as_peft_does() -> None:
    m = tiny(MIXTRAL[0], **MIXTRAL[1])
    with pytest.raises(UnsupportedCombination, match="without up_proj"):
        resolve_targets(m, ("gate_proj", "down_proj"))
    # Mixtral's own names map the same way (w1 + w3 -> gate_up_proj, w2 -> down_proj)
    assert [lin.module for lin in resolve_targets(m, ("w1", "w3", "w2"))] == ["experts.gate_up_proj",
                                                                             "experts.down_proj"]


def test_qlora_leaves_the_experts_unquantized() -> None:
    m = tiny(MIXTRAL[0], **MIXTRAL[1])
    t = TrainingSpec(method="qlora", precision="bf16", lora_targets=("q_proj", "v_proj"), kbit_prep=False,
                     seq_len=64)
    w = weight_bytes(m, t, RECIPES["bf16"])
    # only the attention's Linears are bitsandbytes layers: 64·64 + 2·64·32 + 64·64 elements
    assert w.quantized_params == 64 * 64 * 2 + 2 * 64 * 32
    # the experts stay in bf16 beside them: 4 experts x (2 x 128 x 64 + 64 x 128) elements x 2 bytes
    assert w.unquantized >= 2 * 4 * 3 * 128 * 64
    assert any("bitsandbytes does not quantize" in n for n in estimate(m, t).notes)


def test_lora_on_the_experts_keeps_a_merged_copy_per_layer() -> None:
    m = tiny(MIXTRAL[0], **MIXTRAL[1])
    base: dict = {"method": "lora", "precision": "bf16", "seq_len": 64, "batch_size": 1}
    attn = estimate(m, TrainingSpec(**base, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj")))
    experts = estimate(m, TrainingSpec(**base, lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj")))
    # the merged stack W + B·A: 4 experts x (2 x 128 x 64 + 64 x 128) bf16 elements, whatever the batch
    assert experts.activations - attn.activations >= 2 * 4 * 3 * 128 * 64
    assert any("full-size copy of the adapted expert stack" in n for n in experts.notes)


# Qwen1.5-MoE cut narrow with many experts (benchmarks/accuracy.py MOE_SHAPES "moe:qwen2_moe-narrow"): hidden 64,
# 4 layers of 4 heads (head_dim 16), 48 experts of 32 top 4, a shared expert of 128, vocabulary 512
NARROW = {"hidden_size": 64, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 128,
          "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
          "num_experts": 48, "num_experts_per_tok": 4, "vocab_size": 512}
QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


def narrow(**extra: object):
    d = {**json.loads((HF / "qwen1.5-moe-a2.7b.json").read_text()), **NARROW, **extra}
    return spec_from_hf_config(d, "qwen2_moe", "tests/test_moe_experts.py")


def test_a_checkpointed_moe_rerun_holds_its_saved_set_beside_the_unpermute() -> None:
    from vramcalc.core.memory.activations import layer_activations

    m = narrow()
    t = TrainingSpec(method="lora", precision="bf16", lora_targets=QKVO, batch_size=2, seq_len=512,
                     grad_checkpointing=True)
    la = layer_activations(m, t, RECIPES["bf16"], trainable_weights=False)
    h, e, k, i, s_i, c = 64, 48, 4, 32, 128, 2
    # the block's saved set by the routed output's un-permute (Qwen2MoeSparseMoeBlock runs its shared expert first):
    # the MLP norm's fp32 input and rsqrt, the router's fp32 softmax and int64 top-k, the three int64 permutations and
    # the 16-bit gathered routing weights, per routed copy gate_up (2i), act (i) and down (h) outputs, and the shared
    # expert's act input, act output and up (3 x s_i)
    saved = (4 * h + 4) + (4 * e + 8 * k) + (3 * 8 * k + c * k) + k * c * (3 * i + h) + 3 * c * s_i
    # beside it: the weighted and the un-permuted copies (16-bit), the gathered hidden states (the experts are frozen),
    # the sorted expert ids, the router logits bound to `_`, the shared expert's output; and the rerun's incoming
    # gradient, post-attention residual and normed input (3 x hidden)
    temporaries = 2 * c * k * h + c * k * h + 8 * k + c * e + c * h + 3 * c * h
    assert la.mlp_forward_per_token == saved + temporaries == 4812
    # the first (checkpointed) forward saves nothing: at the per-token sum the gathered hidden states, the down
    # output, the weighted and un-permuted copies (k each) and the sum, the last three in the Qwen router's 16-bit
    # routing-weight dtype (`router_top_value.to(router_logits.dtype)`), not fp32 as Mixtral's
    assert la.forward_transient.per_token == k * (2 * c * h + 2 * c * h) + c * h == 2176


@pytest.mark.parametrize(("extra", "method", "traced"), [
    # tensor peaks the tracer measured (benchmarks/results/accuracy_moe.json, b2 s512 with checkpointing): the LoRA
    # case's at the rerun's un-permute (aten.index), the dense-bottom full case's at the lowest MoE layer's
    # un-permute backward (aten.index_put), every expert gradient above written; -4.56 % and -7.32 % before
    ({}, "lora", 10_882_560),
    ({"mlp_only_layers": [0]}, "full", 15_592_448),
])
def test_narrow_qwen2_moe_with_checkpointing_is_not_under_the_trace(extra, method, traced) -> None:
    m = narrow(**extra)
    kw = {"method": "full", "precision": "pure-bf16"} if method == "full" else \
        {"method": "lora", "precision": "bf16", "lora_targets": QKVO}
    e = estimate(m, TrainingSpec(**kw, batch_size=2, seq_len=512, grad_checkpointing=True))
    assert -0.02 <= (e.tensor_peak_bytes - traced) / traced <= 0.05
