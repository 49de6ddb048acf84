"""Every preset against its source config.json, not only its parameter count (issue 12).

tests/data/hf/ holds the published config.json of one model per family (tests/data/hf/README.md names
each repository). A preset with its config there must equal what the config reader
(io/hf_config.spec_from_hf_config) makes of it, field by field; every other Hugging Face preset of the
family must share the family's kind of block (activation, norms, biases, fused projections), which the
parameter count cannot see: `silu` for `gelu_new` changes the saved activations, not one parameter.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from vramcalc.core.specs import ModelSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
# What a preset says about itself rather than about the architecture.
ABOUT = {"name", "display_name", "source", "aliases", "family", "published_parameters",
         "published_parameters_source", "parameters"}
# The fields of a family's block: the same for every size (tying, dropout, windows vary by model).
KIND = ("hidden_act", "mlp", "norm", "norms_per_layer", "norm_fp32_weight_mul", "parallel_residual", "fused_qkv",
        "fused_gate_up", "qk_norm", "qkv_bias", "o_bias", "mlp_bias", "lm_head_bias",
        "learned_position_embeddings", "attention_kind")


def _from_source(path: Path) -> ModelSpec:
    return spec_from_hf_config(json.loads(path.read_text(encoding="utf-8")), path.stem, str(path))


def _arch(m: ModelSpec) -> dict[str, Any]:
    """The architecture fields, with the defaults the arithmetic applies spelled out (params.py head_dim:
    hidden_size // heads; moe_intermediate_size: the dense intermediate_size)."""
    out = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name not in ABOUT}
    if m.hidden_size and m.num_attention_heads:
        out["head_dim"] = m.head_dim or m.hidden_size // m.num_attention_heads
    if m.num_experts:
        out["moe_intermediate_size"] = m.moe_intermediate_size or m.intermediate_size
    return out


# Text-only presets of a multimodal checkpoint: the language model of the config.json (Gemma 3's text_config)
TEXT_VIEWS = (("gemma-3-4b", "gemma-3-4b-it.json"), ("gemma-3-12b", "gemma-3-12b-it.json"),
              ("gemma-3-27b", "gemma-3-27b-it.json"))


def _sourced() -> list[tuple[str, Path]]:
    """(preset, its config.json) for every fixture that is a preset, and the text views of the multimodal ones
    (the Gemma 3 configs name gemma-3-*-it-vision by their aliases)."""
    out = []
    for path in sorted(HF.glob("*.json")):
        try:
            out.append((presets.find_model(path.stem).name, path))
        except Exception:  # noqa: BLE001 - a fixture without a preset: nothing to compare
            continue
    return out + [(name, HF / file) for name, file in TEXT_VIEWS]


SOURCED = _sourced()
FAMILY_SOURCE = {presets.find_model(name).family: path for name, path in reversed(SOURCED)}


def test_most_families_have_a_source() -> None:
    # 26 presets have their config.json in tests/data/hf (its README; issue 15 added gpt-j-6b, olmo-2-1b and
    # qwen3-0.6b's family fixtures, and the encoders' bert-base-uncased, roberta-base, xlm-roberta-base and
    # distilbert-base-uncased, and the encoder-decoders' flan-t5-base, mt5-base and bart-large); every family but
    # the classics (ResNet and the LSTM language model: no config.json, their sources are torchvision's resnet.py and
    # pytorch/examples' word_language_model); mamba-130m; modernbert-base / modernbert-large; gpt-oss-20b and
    # gpt-oss-120b; the vision-language llava-1.5-7b (llava-hf/llava-1.5-7b-hf); deberta-v3-base / deberta-v3-large;
    # Gemma 3 4B / 12B / 27B multimodal: each the text preset and the -vision preset (gemma-3-4b's was counted
    # before); the four Qwen2-VL / Qwen2.5-VL Instruct models; mamba-codestral-7b (Mamba-2); falcon-h1-0.5b-instruct;
    # Idefics3-8B and the four SmolVLM / SmolVLM2 models; llama-4-scout and llama-4-maverick; the four LLaVA-NeXT
    # (v1.6) models; Llama-3.2-Vision 11B and 90B Instruct; bamba-9b; jamba-1.5-mini and jamba-v0.1;
    # granite-4.0-h-micro; granite-4.0-h-tiny and granite-4.0-h-small;
    # nemotron-h-8b-base-8k and nvidia-nemotron-nano-9b-v2; zamba2-1.2b, zamba2-2.7b and zamba2-7b;
    # nemotron-3-nano-30b-a3b (Nemotron-H MoE); nemotron-3-super-120b-a12b (latent MoE)
    assert len(SOURCED) == 74
    families = {presets.find_model(n).family for n in presets.models().names()}
    assert families - set(FAMILY_SOURCE) == {"resnet", "lstm"}


@pytest.mark.parametrize(("name", "path"), SOURCED, ids=[n for n, _ in SOURCED])
def test_preset_equals_its_config_json(name: str, path: Path) -> None:
    model, source_spec = presets.find_model(name), _from_source(path)
    if model.vision is None:  # a text preset of a multimodal config: its language model
        source_spec = dataclasses.replace(source_spec, vision=None)
    preset, source = _arch(model), _arch(source_spec)
    assert {k: v for k, v in preset.items() if source[k] != v} == {}, f"{name} differs from {path.name}"


HF_PRESETS = [n for n in presets.models().names()
              if "huggingface.co/" in presets.find_model(n).source and presets.find_model(n).family in FAMILY_SOURCE]


# T5 has two blocks in one family (configuration_t5.py feed_forward_proj): the original relu T5 against t5-small's
# config.json (a fixture without a preset), the gated-gelu Flan-T5 against flan-t5-base's.
BLOCK_SOURCE = {"t5-base": HF / "t5-small.json"}


@pytest.mark.parametrize("name", HF_PRESETS)
def test_preset_has_its_familys_block(name: str) -> None:
    preset = presets.find_model(name)
    source = _from_source(BLOCK_SOURCE.get(name, FAMILY_SOURCE[preset.family]))
    differs = {k: (getattr(preset, k), getattr(source, k)) for k in KIND if getattr(preset, k) != getattr(source, k)}
    assert differs == {}, f"{name} vs {FAMILY_SOURCE[preset.family].name}"
