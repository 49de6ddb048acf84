"""bitsandbytes on Falcon under transformers 5: replace_with_bnb_linear replaces `type(module) is nn.Linear` only and
Falcon's Linears are FalconLinear, so nothing is quantized and a "QLoRA" is a LoRA on the unquantized model
(core/memory/unreplaced.py; benchmarks/accuracy.py --grid falcon-bnb)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.explain import explain
from vramcalc.core.memory import estimate, unreplaced
from vramcalc.core.memory.upcast_norms import check_recipe
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io.hf_config import spec_from_hf_config
from vramcalc.io.resolve import resolve_model

HF = Path(__file__).parent / "data" / "hf"
FALCON_7B_PARAMS = 6_921_720_704  # the falcon-7b preset's count (tests/test_hf_config.py checks it against torch)


def _falcon() -> ModelSpec:
    return resolve_model("falcon-7b")[0]


def _qlora(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{"method": "qlora", "lora_targets": ("all-linear",), **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(("asked", "counted"), [
    # prepare_model_for_kbit_training casts every 16-bit parameter that is not Params4bit to fp32 (peft
    # utils/other.py): with nothing quantized, the whole model is fp32; autocast then runs its matmuls in bf16
    ({"precision": "bf16"}, {"precision": "fp32"}),
    ({"precision": "autocast-bf16"}, {"precision": "amp-bf16"}),
    ({"precision": "amp-bf16"}, {"precision": "amp-bf16"}),
    # without it the model stays in its load dtype
    ({"precision": "bf16", "kbit_prep": False}, {"precision": "bf16"}),
    ({"precision": "autocast-bf16", "kbit_prep": False}, {"precision": "autocast-bf16"}),
    ({"precision": "bf16", "kbit_prep": False, "quant_bits": 8}, {"precision": "bf16"}),
])
def test_falcon_qlora_is_the_lora_on_the_unquantized_model(asked: dict[str, object],
                                                            counted: dict[str, object]) -> None:
    m = _falcon()
    got = estimate(m, _qlora(**asked))
    lora = estimate(m, TrainingSpec(method="lora", lora_targets=("all-linear",), **counted))  # type: ignore[arg-type]
    assert got.tensor_peak_bytes == lora.tensor_peak_bytes
    assert got.weights == lora.weights
    assert any("quantizes nothing" in n and "FalconLinear" in n for n in got.notes)


def test_kbit_prep_makes_every_falcon_weight_fp32() -> None:
    # 4 bytes per parameter plus the fp32 LoRA adapters (r 16 on all-linear): the model alone, 6,921,720,704 x 4 B,
    # where NF4 counted about a quarter of that (the bug: 4.6 GB of weights for a run that loads 27.7 GB)
    m = _falcon()
    w = estimate(m, _qlora(precision="bf16")).weights
    adapters = estimate(m, TrainingSpec(method="lora", lora_targets=("all-linear",), precision="fp32")).weights \
        - FALCON_7B_PARAMS * 4
    assert adapters > 0
    assert w == FALCON_7B_PARAMS * 4 + adapters


def test_other_families_still_quantize() -> None:
    m = resolve_model("mistral-7b")[0]
    t = _qlora(precision="bf16")
    assert not unreplaced.active(m, t)
    assert estimate(m, t).weights < estimate(m, TrainingSpec(method="lora", lora_targets=("all-linear",),
                                                             precision="bf16")).weights


def test_falcon_bitsandbytes_inference_weights_are_the_load_dtype() -> None:
    m = _falcon()
    plain = estimate(m, TrainingSpec(mode="inference", precision="bf16"))
    for fmt in ("nf4", "int8"):
        got = estimate(m, TrainingSpec(mode="inference", precision="bf16", weight_dtype=fmt))  # type: ignore[arg-type]
        assert got.tensor_peak_bytes == plain.tensor_peak_bytes
        assert any("quantizes nothing" in n for n in got.notes)


def test_a_falcon_reference_copy_is_not_quantized_either() -> None:
    m = _falcon()
    dpo = {"method": "lora", "objective": "dpo", "ref_model": "copy", "precision": "bf16"}
    got = estimate(m, TrainingSpec(**dpo, ref_quant="4bit"))  # type: ignore[arg-type]
    assert got.tensor_peak_bytes == estimate(m, TrainingSpec(**dpo)).tensor_peak_bytes  # type: ignore[arg-type]
    assert any("--ref-quant" in n and "16-bit reference copy" in n for n in got.notes)


def test_autocast_falcon_qlora_is_no_longer_refused() -> None:
    # it was refused while the estimate counted NF4 weights the tracer never made; Falcon-7B's block is traced
    # under autocast-bf16 with LoRA (--grid amp16) and QLoRA (--grid falcon-bnb)
    check_recipe(_falcon(), _qlora(precision="autocast-bf16", kbit_prep=False))
    spec = replace(_falcon(), parallel_residual=False)  # a block the autocast grids never traced: still refused
    with pytest.raises(UnsupportedCombination, match="Falcon-7B's block"):
        check_recipe(spec, _qlora(precision="autocast-bf16", kbit_prep=False))


def test_explain_shows_the_run_it_counts() -> None:
    e = explain(_falcon(), _qlora(precision="bf16"))
    assert e.training.method == "qlora"  # the run as asked, its explanation the LoRA's
    assert e.breakdown.tensor_peak_bytes == estimate(_falcon(), _qlora(precision="bf16")).tensor_peak_bytes
    assert any("quantizes nothing" in n for n in e.notes)


def test_cut_falcon_against_the_trace() -> None:
    # benchmarks/results/accuracy_falcon-bnb.json, measured with the tracer (torch 2.13 / transformers 5.24): Falcon-7B
    # cut to 4 layers and a 2,048-token vocabulary, NF4 all-linear, bf16, kbit prep off, b2 s1024, no checkpointing:
    # trace 6.849 GB, estimate +0.49 % (the estimate counting NF4 weights read -55.5 % on the 8-bit case of the grid)
    rows = json.loads((Path(__file__).parent.parent / "benchmarks" / "results" / "accuracy_falcon-bnb.json")
                      .read_text())
    row = next(r for r in rows["cases"] if r["id"] == "hfcut:falcon-7b | qlora nf4 | bf16 | b2 s1024 | no-gc")
    d = json.loads((HF / "falcon-7b.json").read_text())
    m = replace(spec_from_hf_config(d, "falcon-7b", str(HF / "falcon-7b.json")), num_layers=4, vocab_size=2_048)
    got = estimate(m, _qlora(precision="bf16", kbit_prep=False, batch_size=2, seq_len=1024)).tensor_peak_bytes
    assert -0.02 <= got / row["trace"]["peak_bytes"] - 1 <= 0.05


def _meta_falcon() -> Any:
    """A 2-layer Falcon-7B-style model (multi-query, parallel attention, one LayerNorm) on the meta device."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = transformers.FalconConfig(hidden_size=64, num_attention_heads=4, num_hidden_layers=2, vocab_size=128,
                                    multi_query=True, parallel_attn=True, new_decoder_architecture=False)
    with torch.device("meta"):
        return transformers.FalconForCausalLM(cfg)


def test_bitsandbytes_replacement_skips_falconlinear() -> None:
    """The library fact the module rests on, checked on a meta-device Falcon where bitsandbytes is installed."""
    pytest.importorskip("bitsandbytes")
    transformers = pytest.importorskip("transformers")
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    model = _meta_falcon()
    before = {n: type(mod).__name__ for n, mod in model.named_modules()}
    replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"],
                            quantization_config=transformers.BitsAndBytesConfig(load_in_4bit=True))
    after = {n: type(mod).__name__ for n, mod in model.named_modules()}
    assert sum(v == "FalconLinear" for v in before.values()) == 8  # 4 per layer: qkv, dense, h_to_4h, 4h_to_h
    assert after == before


def test_hqq_replaces_falconlinear_as_transformers_4_did() -> None:
    """--quant-backend hqq models transformers 4.x, whose hqq integration takes `isinstance(module, nn.Linear)`
    (integrations/hqq.py _prepare_for_hqq_linear): the estimate counts Falcon's Linears quantized, and so does the
    tracer (trace/_hf.py quantize_blocks_hqq). Traced on Falcon-7B cut to 2 layers, hqq 4-bit all-linear, b2 s512:
    weights equal, peak +0.38 % (+3.59 % with checkpointing)."""
    pytest.importorskip("hqq")
    torch = pytest.importorskip("torch")
    from vramcalc.trace._hf import quantize_blocks_hqq

    model = _meta_falcon()
    assert quantize_blocks_hqq(model.transformer.h, 4, 64, 1, torch.bfloat16) == 8  # 4 FalconLinears per layer
    assert not unreplaced.active(_falcon(), _qlora(quant_backend="hqq"))
