"""LLaMA-Factory upcast_layernorm over 16-bit weights (issue 13): --upcast-norms, core/memory/upcast_norms.py.

hiyouga/LLaMA-Factory model_utils/checkpointing.py @ 06d78ff1 prepare_model_for_training casts every 1-D parameter
whose name holds "norm" or "ln" (extras/constants.py LAYERNORM_NAMES) to fp32; the Trainer's bf16 flag runs the step
under autocast (accelerate prepare_model). The bytes below are derived from the toy configs' shapes; the trace test
runs the real transformers / peft code on fake CUDA tensors.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from test_upcast import _write
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import runfiles

# A 2-layer llama, hidden 256, MLP 688: norm parameters 2 layers x 2 x 256 + the final 256 = 1,280
LLAMA = ModelSpec(name="toy-llama", source="test", family="llama", vocab_size=2_048, hidden_size=256,
                  intermediate_size=688, num_layers=2, num_attention_heads=4, num_kv_heads=2)
NORM_PARAMS = 2 * 2 * 256 + 256
TOKENS = 2 * 256
FULL = TrainingSpec(method="full", precision="pure-bf16", batch_size=2, seq_len=256)
LORA = TrainingSpec(method="lora", precision="bf16", lora_targets=("all-linear",), batch_size=2, seq_len=256)


def _up(t: TrainingSpec) -> TrainingSpec:
    return replace(t, upcast_norms=True)


def test_full_pure_bf16_bytes() -> None:
    base, up = estimate(LLAMA, FULL), estimate(LLAMA, _up(FULL))
    # weights, gradients: 4 - 2 bytes more per norm parameter (fp32 instead of bf16)
    assert up.details["weights.base"] - base.details["weights.base"] == NORM_PARAMS * 2
    assert up.gradients - base.gradients == NORM_PARAMS * 2
    # pure-bf16 AdamW: two zeros_like(param) moments, fp32 for the norms: 2 x 2 bytes more each
    assert up.details["optimizer_state.fp32_norms"] == NORM_PARAMS * 2 * 2
    # saved per layer: q, k, v each keep their own 16-bit cast of the fp32 normed input (two more than the one shared
    # 16-bit output) and gate, up theirs (one more): 3 x 2 B x hidden per token
    assert up.details["activations.per_layer"] - base.details["activations.per_layer"] == 3 * 2 * 256 * TOKENS


def test_lora_adapters_run_as_autocast_matmuls() -> None:
    # frozen base, fp32 adapters: without autocast each lora_A saves an fp32 copy of its input and lora_B an fp32
    # lora_A output; under the Trainer's autocast both are 16-bit: 2 B less per input feature and per rank, for the
    # seven projections (q, k, v, o, gate, up: in 256; down: in 688), rank 16 (TrainingSpec's default)
    t = LORA
    r = t.lora_rank
    base = layer_activations(LLAMA, t, recipe_of(t), trainable_weights=False)
    up = layer_activations(LLAMA, _up(t), recipe_of(t), trainable_weights=False)
    saved = sum(x.per_token for x in up.terms) - sum(x.per_token for x in base.terms)
    assert saved == -2 * (6 * (256 + r) + (688 + r))
    # weights: the frozen norms' 2 more bytes each; no gradients or states for them
    e0, e1 = estimate(LLAMA, t), estimate(LLAMA, _up(t))
    assert e1.details["weights.base"] - e0.details["weights.base"] == NORM_PARAMS * 2
    assert e1.gradients == e0.gradients and e1.optimizer_state == e0.optimizer_state


def test_gemma_norm_returns_16_bits() -> None:
    # GemmaRMSNorm (modeling_gemma.py): output * (1.0 + weight.float()), then type_as(x): a 16-bit output, so no
    # Linear casts its own copy; only the norm weights' bytes (and a full run's gradients and states) change
    gemma = replace(LLAMA, name="toy-gemma", family="gemma", norm_fp32_weight_mul=True)
    base, up = estimate(gemma, FULL), estimate(gemma, _up(FULL))
    assert up.details["activations.per_layer"] == base.details["activations.per_layer"]
    assert up.details["weights.base"] - base.details["weights.base"] == NORM_PARAMS * 2


@pytest.mark.parametrize("change", [{"precision": "amp-bf16"}, {"precision": "fp32"},
                                    {"method": "qlora", "kbit_prep": True}])
def test_no_change_where_the_norms_are_fp32_already(change: dict[str, object]) -> None:
    # amp / fp32 hold every weight in fp32; QLoRA's prepare_model_for_kbit_training casts the norms to fp32
    t = replace(LORA, **change)
    base, up = estimate(LLAMA, t), estimate(LLAMA, _up(t))
    assert up.tensor_peak_bytes == base.tensor_peak_bytes and up.details == base.details
    assert any("fp32 already" in n and "no change" in n for n in up.notes)


@pytest.mark.parametrize(("model", "change", "why"), [
    (replace(LLAMA, family="gpt2", norm="layernorm"), {}, "Llama, Mistral, Qwen2, Gemma and StarCoder2"),
    (replace(LLAMA, qk_norm=True), {}, "Llama, Mistral, Qwen2, Gemma and StarCoder2"),
    (LLAMA, {"zero": 2}, "DeepSpeed"),
    (LLAMA, {"method": "prefix-tuning"}, "--method prefix-tuning"),
    (LLAMA, {"loss": "chunked"}, "--loss chunked"),
    (LLAMA, {"dora": True}, "--dora"),
    (LLAMA, {"upcast_logits": True}, "--upcast-logits"),
])
def test_refused_where_not_modelled(model: ModelSpec, change: dict[str, object], why: str) -> None:
    with pytest.raises(UnsupportedCombination, match=why) as err:
        estimate(model, _up(replace(LORA, **change)))
    assert "drop --upcast-norms" in str(err.value) and "\n" not in str(err.value)


def test_training_only() -> None:
    with pytest.raises(SpecError, match="--upcast-norms"):
        TrainingSpec(mode="inference", upcast_norms=True)


def test_llama_factory_key_is_mapped(tmp_path: Path) -> None:
    head = "model_name_or_path: TinyLlama/TinyLlama-1.1B\nstage: sft\nfinetuning_type: lora\nbf16: true\n"
    run = runfiles.load(_write(tmp_path, "lf.yaml", head + "upcast_layernorm: true\n"))[0]
    assert run.options["upcast_norms"] is True and run.unmodelled == [] and "upcast_layernorm" in run.mapped
    off = runfiles.load(_write(tmp_path, "off.yaml", head + "upcast_layernorm: false\n"))[0]
    assert off.options["upcast_norms"] is False and off.unmodelled == []
    full = head.replace("finetuning_type: lora", "finetuning_type: full")
    pure = runfiles.load(_write(tmp_path, "pure.yaml", full + "pure_bf16: true\nupcast_layernorm: true\n"))[0]
    assert pure.options["precision"] == "pure-bf16" and pure.options["upcast_norms"] is True
    assert pure.unmodelled == []
    # full tuning without pure_bf16: amp-bf16 (model/adapter.py casts trainable parameters to fp32), the flag mapped
    # and, in the estimate, a no-change note (test_no_change_where_the_norms_are_fp32_already)
    amp = runfiles.load(_write(tmp_path, "amp.yaml", full + "upcast_layernorm: true\n"))[0]
    assert amp.options["precision"] == "amp-bf16" and amp.options["upcast_norms"] is True and amp.unmodelled == []


# A layer-dominated llama (4 layers, hidden 256, MLP 1,024, a 512-token vocabulary): the peak in the layers, where
# LoRA's adapters run as autocast matmuls (the loss-dominated grid cases peak at the loss)
LAYERS = replace(LLAMA, name="toy-llama-layers", vocab_size=512, intermediate_size=1_024, num_layers=4)


@pytest.mark.parametrize("gc", [False, True])
def test_matches_the_trace(gc: bool) -> None:
    # traced with the norms cast to fp32 and the step under autocast (trace/_run.py); measured -1.34 % (no
    # checkpointing: the forward at down_proj's adapter) and +2.48 % (checkpointing: the rerun there) when written
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = _up(replace(LORA, seq_len=512, grad_checkpointing=gc))
    e, r = estimate(LAYERS, t), trace(LAYERS, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, r.peak_op)
