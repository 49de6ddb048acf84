"""QLoRA on vision-language models: transformers' bitsandbytes quantizer replaces the vision tower's and projector's
nn.Linear modules as well as the text model's (quantizers/base.py get_keys_to_not_convert skips lm_head only), so
the image side is stored 4-bit (core/params.py image_linears, core/memory/weights.py image_side_bytes) and the tracer
quantizes the same modules (trace/_hf.py quantize_image_side). Checked against the library's own rule on each
family's model built on the meta device from a published config.json (tests/data/hf)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.memory import estimate
from vramcalc.core.memory.precision import RECIPES
from vramcalc.core.memory.weights import image_side_bytes, nf4_bytes
from vramcalc.core.params import image_linears, projector_params, vision_tower_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io.hf_config import llama4_vision, spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FAMILIES = ["llava-1.5-7b-hf", "llava-v1.6-mistral-7b-hf", "qwen2-vl-2b-instruct", "qwen2.5-vl-3b-instruct",
            "gemma-3-4b-it", "smolvlm-256m-instruct", "llama-3.2-11b-vision-instruct",
            "llama-4-scout-17b-16e-instruct"]
QLORA = TrainingSpec(method="qlora", kbit_prep=False, batch_size=1, seq_len=64)
TEXT_PREFIXES = ("model.language_model.", "model.text_model.", "language_model.", "lm_head")


def _spec(name: str) -> ModelSpec:
    d = json.loads((HF / f"{name}.json").read_text())
    m = spec_from_hf_config(d, name, f"tests/data/hf/{name}.json")
    if name.startswith("llama-4"):  # the text model the config reads as, with its vision_config's image side
        m = replace(m, vision=llama4_vision(d, name))
    return m


def _library_image_linears(hf, layers) -> Counter:
    """(in, out) of every Linear outside the text blocks that transformers' bitsandbytes replacement converts."""
    from torch import nn
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = HfQuantizer.get_modules_to_not_convert(hf, None, hf._keep_in_fp32_modules)
    inside = {id(x) for block in layers for x in block.modules()}
    return Counter((mod.in_features, mod.out_features) for name, mod in hf.named_modules()
                   if type(mod) is nn.Linear and id(mod) not in inside and should_convert_module(name, skip))


@pytest.mark.parametrize("name", FAMILIES)
def test_image_linears_are_what_the_quantizer_converts(name: str) -> None:
    torch = pytest.importorskip("torch")
    from vramcalc.trace._hf import QuantLinear, build_model, find_layers, quantize_image_side

    m = _spec(name)
    assert m.vision is not None
    hf, _ = build_model(m, QLORA, torch.bfloat16)
    layers = find_layers(hf, m.num_layers)
    library = _library_image_linears(hf, layers)
    tower, projector = image_linears(m.vision, m.hidden_size)
    ours = Counter()
    for lin in (*tower, *projector):
        ours[(lin.in_features, lin.out_features)] += lin.count
    assert ours == library
    # the tracer replaces exactly those, and the image side it then holds is image_side_bytes' (the QuantLinear's
    # 16-entry fp32 code table apart, as for the text blocks)
    n = quantize_image_side(hf, layers, 4, True, torch.bfloat16)
    assert n == sum(library.values())
    stored = sum(p.numel() * p.element_size() for k, p in hf.named_parameters() if not k.startswith(TEXT_PREFIXES))
    stored += sum(b.numel() * b.element_size() for k, mod in hf.named_modules() if isinstance(mod, QuantLinear)
                  and not k.startswith(TEXT_PREFIXES) for bn, b in mod.named_buffers() if bn != "code")
    t_params, p_params = vision_tower_params(m.vision), projector_params(m.vision, m.hidden_size)
    if m.vision.kind == "llava_next":  # image_newline: a Parameter of the text width beside the projector
        p_params += m.hidden_size
    assert image_side_bytes(m, QLORA, RECIPES["bf16"], t_params, p_params).total == stored


def test_llava_tower_bytes_by_hand() -> None:
    # LLaVA-1.5-7B's CLIP ViT-L/14-336 (tests/data/hf/llava-1.5-7b-hf.json): 24 layers of 4 biased 1024 x 1024
    # projections and fc1 / fc2 (1024 <-> 4096); the projector 1024 -> 4096 -> 4096
    m = _spec("llava-1.5-7b-hf")
    t, p = vision_tower_params(m.vision), projector_params(m.vision, 4096)
    q4 = nf4_bytes(1024 * 1024, True)
    q16 = nf4_bytes(1024 * 4096, True)
    linear_numel = 24 * (4 * 1024 * 1024 + 2 * 1024 * 4096)
    got = image_side_bytes(m, QLORA, RECIPES["bf16"], t, p)
    assert got.tower == 24 * (4 * sum(q4) + 2 * sum(q16)) + 2 * (t - linear_numel)
    assert got.projector == sum(nf4_bytes(1024 * 4096, True)) + sum(nf4_bytes(4096 * 4096, True)) \
        + 2 * (p - 1024 * 4096 - 4096 * 4096)
    # kbit prep upcasts the rest (biases, embeddings, norms) to fp32
    prep = image_side_bytes(m, replace(QLORA, kbit_prep=True), RECIPES["bf16"], t, p)
    assert prep.tower - got.tower == 2 * (t - linear_numel)
    # LoRA keeps the load dtype
    assert image_side_bytes(m, replace(QLORA, method="lora"), RECIPES["bf16"], t, p).total == 2 * (t + p)


@pytest.mark.parametrize("name", FAMILIES)
def test_estimate_counts_the_quantized_image_side(name: str) -> None:
    m = _spec(name)
    lora = estimate(m, replace(QLORA, method="lora"))
    qlora = estimate(m, QLORA)
    t, p = vision_tower_params(m.vision), projector_params(m.vision, m.hidden_size)
    if m.vision.kind == "llava_next":
        p += m.hidden_size
    side = image_side_bytes(m, QLORA, RECIPES["bf16"], t, p)
    assert qlora.details["weights.vision_tower"] == side.tower
    assert qlora.details["weights.projector"] == side.projector
    assert lora.details["weights.vision_tower"] == 2 * t
    assert side.tower < t  # 4-bit Linears hold most of the tower: well under a byte per parameter
