"""--precision autocast-* on Falcon and BLOOM, and GPT-NeoX's freeze (issue 15, --grid amp16): Falcon-7B's block with
LoRA and freeze (its math SDPA path's matmuls under autocast; without checkpointing the lowest trained layer's MLP
backward), BLOOM with LoRA, QLoRA and freeze (its fp32 residual stream), Pythia's freeze; Falcon's QLoRA and other
blocks refused (core/memory/upcast_norms.py check_recipe, fp32_residual; core/memory/activations.py; core/memory/
__init__.py _falcon_freeze_lowest)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import layer_activations
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.memory.upcast_norms import fp32_residual
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"


def _hf(name: str) -> ModelSpec:
    path = HF / f"{name}.json"
    return spec_from_hf_config(json.loads(path.read_text()), name, str(path))


def _t(method: str = "lora", **kw: object) -> TrainingSpec:
    base: dict[str, object] = {"method": method, "lora_rank": 8, "batch_size": 1, "seq_len": 256,
                               "precision": "autocast-bf16"}
    if method in ("lora", "qlora"):
        base["lora_targets"] = ("all-linear",)
    if method == "qlora":
        base["kbit_prep"] = False
    if method == "freeze":
        base["freeze_layers"] = 2
    return TrainingSpec(**{**base, **kw})


def test_falcon_lora_and_bloom_are_estimated() -> None:
    # refused before --grid amp16 ("is not modelled with falcon-7b (traced on Llama, ...)")
    assert estimate(presets.find_model("falcon-7b"), _t()).tensor_peak_bytes > 0
    bloom = _hf("bloom-560m")
    for method in ("lora", "qlora", "freeze"):
        assert estimate(bloom, _t(method)).tensor_peak_bytes > 0, method


def test_gpt_neox_freeze_is_estimated() -> None:
    # refused before (the tracer's math-path sdpa in the frozen layers; traced on the fused kernel, as CUDA picks it)
    m = presets.find_model("pythia-410m")
    assert estimate(m, _t("freeze")).tensor_peak_bytes > 0
    assert estimate(m, _t("freeze", grad_checkpointing=True)).tensor_peak_bytes > 0


def test_falcon_qlora_is_its_lora() -> None:
    # refused before; transformers 5's bitsandbytes quantizes no FalconLinear, so it is the LoRA on the 16-bit model
    # (memory/unreplaced.py, tests/test_unreplaced.py, --grid falcon-bnb)
    falcon = presets.find_model("falcon-7b")
    assert estimate(falcon, _t("qlora")).tensor_peak_bytes == estimate(falcon, _t()).tensor_peak_bytes
    assert estimate(falcon, _t("freeze", grad_checkpointing=True)).tensor_peak_bytes > 0


def test_falcon_freeze_without_checkpointing_lowest_trained_layer() -> None:
    # refused before (backward.bottom counted a frozen 16-bit layer's autocast copies: +3.32 % on --grid amp16's cut).
    # Falcon-7B cut to 4 layers, freeze 2 (its tied head trained: the frozen layers record a graph), b1 s256: at the
    # lowest trained layer's MLP backward its qkv (4,544 x 4,672) and dense (4,544 x 4,544) fp32 gradients are not
    # made yet, 4 B x 41,877,504 = 167,510,016 B below every gradient; their bf16 casts are still saved, 2 B x
    # 41,877,504 = 83,755,008 B; its temporaries are dense_h_to_4h's bf16 weight gradient, 2 x 4,544 x 18,176 =
    # 165,183,488 B, and per token 2 + 2 + 4 B x 4,544 (the input's bf16 gradient and cast, the fp32 residual's)
    m = replace(presets.find_model("falcon-7b"), num_layers=4, vocab_size=2_048)
    b = estimate(m, _t("freeze"))
    moments = {x.key: {y.name: y.bytes for y in x.terms} for x in b.named_moments()}
    lowest = moments["backward.lowest_trained"]
    assert lowest["gradients (the trained layers', head's and norm's)"] == b.gradients - 4 * 41_877_504
    assert lowest["its autocast copies"] == 2 * 41_877_504 == 83_755_008
    assert lowest["layer backward temporaries"] == 165_183_488 + 256 * 8 * 4_544
    assert moments["backward.bottom"]["its autocast copies"] == 0  # a frozen layer's weights are 16-bit: no casts
    assert "backward.lowest_trained" not in {x.key for x in estimate(m, _t("freeze", precision="amp-bf16"))
                                              .named_moments()}


def test_falcon_frozen_layers_backward_writes_no_weight_gradients() -> None:
    # Falcon-7B's trained layer under autocast: by its attention's backward the dense and MLP weight gradients are
    # written (fp32, 4 B) and their 16-bit autocast copies freed (2 B): 2 B x (4,544 x 4,544 + 2 x 4,544 x 18,176)
    # = 371,662,848 B; a frozen layer's backward (backward.frozen, freeze with checkpointing) writes none
    m = presets.find_model("falcon-7b")
    t = _t("freeze", grad_checkpointing=True)
    layer = layer_activations(m, t, RECIPES["autocast-bf16"], trainable_weights=True, input_grad=True)
    assert layer.attn_backward_grads_const == 2 * (4_544 * 4_544 + 2 * 4_544 * 18_176) == 371_662_848
    assert layer_activations(m, t, RECIPES["autocast-bf16"], False, True).attn_backward_grads_const == 0
    moments = {x.key: x for x in estimate(replace(m, num_layers=4, vocab_size=2_048), t).named_moments()}
    temporaries = {k: next(x.bytes for x in moments[k].terms if x.name == "layer backward temporaries")
                   for k in ("backward.top", "backward.frozen")}
    assert temporaries["backward.top"] >= 371_662_848 > temporaries["backward.frozen"]


def test_other_falcon_blocks_stay_refused() -> None:
    # new_decoder_architecture's two LayerNorms, multi-head (multi_query false) attention (hf_config.py _falcon) and
    # Falcon-RW's sequential block are not traced
    falcon = presets.find_model("falcon-7b")
    for m in (replace(falcon, norms_per_layer=2), replace(falcon, num_kv_heads=None),
              replace(falcon, parallel_residual=False)):
        with pytest.raises(UnsupportedCombination, match="Falcon traced on Falcon-7B's block"):
            estimate(m, _t())


def test_untraced_family_names_falcon_and_bloom() -> None:
    with pytest.raises(UnsupportedCombination) as e:
        estimate(presets.find_model("falcon-h1-0.5b-instruct"), _t())
    assert "GPT-NeoX, Falcon and BLOOM text models" in str(e.value)


def test_falcon_math_sdpa_runs_16_bit_under_autocast() -> None:
    # Falcon-7B (71 heads x 64, one kv head; its causal mask sends sdpa to the math path): under the Trainer's autocast
    # the math path's matmuls save 16-bit casts of q, k, v expanded to every head (2 B x 3 x 4,544 per token) and the
    # softmax is 16-bit (2 B x 71 per key), as amp-bf16's (activations.py)
    m = presets.find_model("falcon-7b")
    layer = layer_activations(m, _t(), RECIPES["autocast-bf16"], trainable_weights=False, input_grad=True)
    terms = {x.name: x for x in layer.terms}
    assert terms["sdpa math backend q, k, v (16-bit casts, expanded)"].per_token == 2 * 3 * 4_544
    assert terms["sdpa math backend softmax (16-bit, autocast)"].per_token_seq == 2 * 71
    assert not any("fp32" in name and "sdpa" in name for name in terms)


def test_bloom_residual_stream_is_fp32_under_autocast() -> None:
    # BLOOM's embedding LayerNorm returns fp32 under autocast and the residual adds keep it: a checkpointed layer keeps
    # an fp32 input, 4 B x 1,024 (bloom-560m's hidden) per token per layer; without autocast 2 B
    bloom = replace(_hf("bloom-560m"), num_layers=4, vocab_size=2_048)
    assert fp32_residual(bloom, _t(), RECIPES["autocast-bf16"])
    assert not fp32_residual(bloom, _t(precision="bf16"), RECIPES["bf16"])
    assert not fp32_residual(presets.find_model("gpt2"), _t(), RECIPES["autocast-bf16"])
    for precision, width in (("autocast-bf16", 4), ("bf16", 2)):
        b = estimate(bloom, _t(precision=precision, grad_checkpointing=True))
        mo = next(x for x in b.named_moments() if x.key == "forward.loss")
        assert next(x.bytes for x in mo.terms if x.name == "kept layer inputs") == 4 * 256 * width * 1_024


# Traced toys, b1 s256, a 2,048-token vocabulary, with checkpointing unless said. Measured (estimate against the
# tracer, this setup): falcon-7b 2 layers LoRA +0.31 %, freeze 1 -1.05 %, freeze 1 without checkpointing +0.23 %
# (+8.52 % before backward.lowest_trained); bloom-560m 4 layers LoRA -1.19 %, freeze 2 +1.29 %; pythia-410m 2 layers
# freeze 1 +0.01 %, its frozen layer's sdpa on the fused kernel.
TOYS = [("falcon-7b", 2, "lora", {}), ("falcon-7b", 2, "freeze", {"freeze_layers": 1}),
        ("falcon-7b", 2, "freeze", {"freeze_layers": 1, "grad_checkpointing": False}), ("bloom-560m", 4, "lora", {}),
        ("bloom-560m", 4, "freeze", {}), ("pythia-410m", 2, "freeze", {"freeze_layers": 1})]


@pytest.mark.parametrize(("name", "layers", "method", "kw"), TOYS,
                         ids=[f"{n}-{m}{'' if k.get('grad_checkpointing', True) else '-no-gc'}" for n, _, m, k in TOYS])
def test_matches_the_trace(name: str, layers: int, method: str, kw: dict[str, object]) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import _cuda, trace

    m = _hf(name) if name == "bloom-560m" else presets.find_model(name)
    m = replace(m, num_layers=layers, vocab_size=2_048)
    t = _t(method, **{"grad_checkpointing": True, **kw})
    _cuda._NO_GRAPH_FUSED[0] = name == "pythia-410m"  # as benchmarks/accuracy.py amp16_grid traces it
    try:
        r = trace(m, t)
    finally:
        _cuda._NO_GRAPH_FUSED[0] = False
    e = estimate(m, t)
    err = (e.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.02, (err, e.phases, r.phase_peaks, r.peak_op)
