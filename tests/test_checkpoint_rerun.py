"""A checkpointed layer's forward rerun inside its backward (memory/__init__.py `backward.recompute`), and the
attention's backward after a MoE block's (issue 15: the families grid's phi-3 LoRA case was 2.46 % under, the
moe grid's Mixtral LoRA eager case 8.8 % over). Each toy is a published config.json cut small, traced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
LORA_GC_EAGER = TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=2,
                             seq_len=256, attention="eager", grad_checkpointing=True)


def _cut(config: str, **shape: object):
    d = {**json.loads((HF / f"{config}.json").read_text()), **shape}
    return spec_from_hf_config(d, config, "test")


# Wide MLPs (intermediate 8 x hidden) over a small vocabulary, so that the top layer's rerun at an up-projection's
# adapter path is the step's peak, as in the families grid's 4-layer phi-3-mini and Mistral cases.
RERUN = {
    "phi3 (fused gate_up)": ("phi-3-mini-4k", {"hidden_size": 256, "intermediate_size": 2048, "num_hidden_layers": 2,
                                               "num_attention_heads": 4, "num_key_value_heads": 4,
                                               "vocab_size": 512}),
    "mistral (gate_proj, up_proj)": ("mistral-7b-v0.1", {"hidden_size": 256, "intermediate_size": 2048,
                                                        "num_hidden_layers": 2, "num_attention_heads": 4,
                                                        "num_key_value_heads": 2, "vocab_size": 512}),
}


@pytest.mark.parametrize("name", list(RERUN))
def test_the_rerun_of_a_checkpointed_layer_matches_the_trace(name: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    config, shape = RERUN[name]
    m = _cut(config, **shape)
    e, r = estimate(m, LORA_GC_EAGER), trace(m, LORA_GC_EAGER)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    # issue 15's bounds; before the rerun's incoming gradients and held inputs were counted, these were under
    assert -0.02 <= err <= 0.05, (name, err, r.peak_phase, r.peak_op)
    rerun = next(x for x in e.named_moments() if x.key == "backward.recompute")
    # the rerun moment alone reaches the trace's peak within 2 % (it is where the tracer's peak is)
    assert rerun.total >= 0.98 * r.peak_bytes, (name, rerun.total, r.peak_bytes, r.peak_op)


def test_the_attention_backward_after_a_moe_block_has_no_merged_expert_stacks() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    # benchmarks/accuracy.py MOE_SHAPES["moe:mixtral"], the moe grid's worst case before (+8.81 %)
    m = _cut("mixtral-8x7b-v0.1", hidden_size=256, intermediate_size=384, num_hidden_layers=2,
             num_attention_heads=8, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
             vocab_size=1024)
    t = TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=2, seq_len=512,
                     attention="eager", grad_checkpointing=True)
    e, r = estimate(m, t), trace(m, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, r.peak_op)


# benchmarks/accuracy.py MOE_SHAPES: Qwen1.5-MoE's and Qwen3-MoE's routers return 16-bit top-k weights, so the routed
# experts' weighted outputs and their gradients are 16-bit (Qwen1.5-MoE LoRA all-linear b1 s1024 was +5.03 % counted
# as fp32, past issue 15's 5 %), and a
# checkpointed MoE layer's rerun holds the residual stream's gradient and the block's inputs (Qwen3-MoE LoRA q,k,v,o
# was -1.7 % without them once the weights were 16-bit).
QWEN_MOE = {
    "qwen2_moe lora all-linear": ("qwen1.5-moe-a2.7b", {"hidden_size": 256, "moe_intermediate_size": 192,
                                           "shared_expert_intermediate_size": 768, "intermediate_size": 768,
                                           "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 8,
                                           "num_experts": 16, "num_experts_per_tok": 4, "vocab_size": 1024},
                       TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=1,
                                    seq_len=1024, grad_checkpointing=True)),
    "qwen3_moe lora q,k,v,o": ("qwen3-30b-a3b", {"hidden_size": 256, "moe_intermediate_size": 128,
                                                "intermediate_size": 768, "num_hidden_layers": 2,
                                                "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
                                                "num_experts": 16, "num_experts_per_tok": 4, "vocab_size": 1024},
                               TrainingSpec(method="lora", precision="bf16", batch_size=2, seq_len=256,
                                            lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"),
                                            grad_checkpointing=True)),
}


@pytest.mark.parametrize("name", list(QWEN_MOE))
def test_qwen_moe_with_checkpointing_matches_the_trace(name: str) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    config, shape, t = QWEN_MOE[name]
    m = _cut(config, **shape)
    e, r = estimate(m, t), trace(m, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (name, err, r.peak_op)
