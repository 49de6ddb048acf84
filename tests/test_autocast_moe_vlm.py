"""--precision autocast-bf16 on mixture-of-experts and vision-language models (core/memory/upcast_norms.py
check_recipe, AUTOCAST_MOE_FAMILIES / AUTOCAST_VISION_KINDS; measured by benchmarks/accuracy.py --grid autocast-moe and
--grid autocast-vlm): the Trainer's autocast over a bf16 load with peft's fp32 adapters. transformers 5.24's fused
experts (integrations/moe.py _grouped_mm) are not on autocast's lists and cast their input to the expert weights'
dtype, so the experts run in bf16 as without autocast; a vision-language model's frozen tower records no graph."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import runfiles
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
# the published configs (tests/data/hf) cut to hidden 64, 2 layers, 4 heads / 2 KV heads of 16, 4 experts top 2
CUT = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
       "num_local_experts": 4, "num_experts": 4, "num_experts_per_tok": 2, "vocab_size": 256}
MIXTRAL = ("mixtral-8x7b-v0.1", {"intermediate_size": 96})
QWEN3 = ("qwen3-30b-a3b", {"moe_intermediate_size": 48, "intermediate_size": 96})
QWEN2 = ("qwen1.5-moe-a2.7b", {"moe_intermediate_size": 48, "shared_expert_intermediate_size": 128,
                               "intermediate_size": 96})


def tiny(config: str, **extra: object):
    return spec_from_hf_config({**json.loads((HF / f"{config}.json").read_text()), **CUT, **extra}, config,
                               "tests/test_autocast_moe.py")


def _lora(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{"method": "lora", "precision": "autocast-bf16", "lora_rank": 4,
                           "lora_targets": ("all-linear",), "batch_size": 2, "seq_len": 128, **kw})


@pytest.mark.parametrize("case", [MIXTRAL, QWEN3, QWEN2])
def test_the_adapters_and_weights_are_the_16_bit_runs(case) -> None:
    # autocast changes the compute, not the storage: the same bf16 base (experts included) and the same fp32 adapters
    # (peft's autocast_adapter_dtype; ParamWrapper's expert adapters under all-linear on Mixtral / Qwen3-MoE) as
    # --precision bf16, so parameters, weights, gradients and AdamW states are equal
    m = tiny(case[0], **case[1])
    ac, bf = estimate(m, _lora()), estimate(m, _lora(precision="bf16"))
    assert (ac.trainable_parameters, ac.weights, ac.gradients, ac.optimizer_state) == \
        (bf.trainable_parameters, bf.weights, bf.gradients, bf.optimizer_state)
    assert ac.gradients == 4 * ac.trainable_parameters  # fp32 adapter gradients


def test_freeze_is_refused_in_one_line() -> None:
    # LLaMA-Factory's cast_trainable_params_to_fp32 makes the trained layer's experts fp32, which torch._grouped_mm
    # refuses (bf16 only): the tracer cannot run it, so vramcalc does not count it
    m = tiny(MIXTRAL[0], **MIXTRAL[1])
    with pytest.raises(UnsupportedCombination) as e:
        estimate(m, TrainingSpec(method="freeze", freeze_layers=1, precision="autocast-bf16"))
    assert "grouped_mm" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("case", "t"), [
    (MIXTRAL, _lora()),
    (QWEN3, _lora(method="qlora", kbit_prep=False, grad_checkpointing=True)),
    (QWEN2, _lora(grad_checkpointing=True)),
])
def test_matches_the_trace(case, t: TrainingSpec) -> None:
    # the tracer loads bf16 weights, adds peft's fp32 adapters and runs the forward under CUDA autocast
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = tiny(case[0], **case[1])
    e, r = estimate(m, t), trace(m, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.05, (err, e.phases, r.phase_peaks, r.peak_op)


def _hf(config: str):
    return spec_from_hf_config(json.loads((HF / f"{config}.json").read_text()), config, "tests/data/hf")


@pytest.mark.parametrize("config", ["llava-1.5-7b-hf", "qwen2-vl-2b-instruct", "qwen2.5-vl-7b-instruct"])
def test_lora_on_the_language_model_keeps_the_16_bit_storage(config: str) -> None:
    # LoRA all-linear on the language model only (LLaMA-Factory's lora_target all, tower and projector frozen): the
    # same bf16 base and fp32 adapters as --precision bf16, the autocast in the compute alone
    m = _hf(config)
    t = _lora(lora_targets=("all-linear", "lm-only"), lora_rank=16, batch_size=1, seq_len=256)
    ac, bf = estimate(m, t), estimate(m, _lora(**{**t.__dict__, "precision": "bf16"}))
    assert (ac.trainable_parameters, ac.weights, ac.gradients, ac.optimizer_state) == \
        (bf.trainable_parameters, bf.weights, bf.gradients, bf.optimizer_state)


@pytest.mark.parametrize(("config", "kw", "needle"), [
    # q_proj, v_proj reach LLaVA's CLIP tower (peft's suffix match): tower adapters under autocast, not traced
    ("llava-1.5-7b-hf", {"lora_targets": ("q_proj", "v_proj")}, "CLIP tower"),
    ("qwen2-vl-2b-instruct", {"lora_targets": ("all-linear",)}, "vision tower or merger"),
    ("llava-1.5-7b-hf", {"method": "freeze", "freeze_layers": 2}, "--method freeze"),
    ("llava-v1.6-mistral-7b-hf", {"lora_targets": ("all-linear", "lm-only")}, "traced on LLaVA-1.5"),
])
def test_what_is_not_traced_is_refused_in_one_line(config: str, kw: dict[str, object], needle: str) -> None:
    with pytest.raises(UnsupportedCombination) as e:
        estimate(_hf(config), _lora(**kw))
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(("config", "body"), [
    ("qwen2.5-vl-7b-instruct", "finetuning_type: lora\nlora_target: all\n"),
    ("qwen3-30b-a3b", "finetuning_type: lora\nlora_target: all\n"),
])
def test_llama_factory_lora_with_bf16_maps_to_autocast(tmp_path: Path, config: str, body: str) -> None:
    # LLaMA-Factory's LoRA keeps peft's fp32 adapters over the bf16 load and its Trainer runs bf16: true under
    # autocast (accelerate prepare_model): --precision autocast-bf16 now, with no fallback note
    f = tmp_path / "lf.yaml"
    f.write_text(f"model_name_or_path: {HF / config}.json\nstage: sft\n{body}bf16: true\n")
    run = runfiles.load(str(f))[0]
    assert run.options["precision"] == "autocast-bf16"
    assert not [n for n in run.notes if "is not modelled here" in n]
