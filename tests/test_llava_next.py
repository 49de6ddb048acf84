"""LLaVA-NeXT (issue 15): counts against transformers' LlavaNextForConditionalGeneration, the anyres image arithmetic
against the library's own functions, the image side's terms (memory/llava_next.py) and the refusals."""

from __future__ import annotations

import json
import random
import types
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import anyres, estimate, vision
from vramcalc.core.params import count_params, image_newline_params, projector_params, vision_tower_params
from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
NAMES = ("llava-v1.6-mistral-7b-hf", "llava-v1.6-vicuna-7b-hf", "llava-v1.6-vicuna-13b-hf", "llava-v1.6-34b-hf")


def fixture(name: str) -> ModelSpec:
    path = HF / f"{name}.json"
    return spec_from_hf_config(json.loads(path.read_text()), name, str(path))


@pytest.mark.parametrize("name", NAMES)
def test_count_matches_the_library(name: str) -> None:
    # sum(p.numel()) of LlavaNextForConditionalGeneration built from the same config.json on the meta device, and
    # its vision_tower / multi_modal_projector / image_newline one by one
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = json.loads((HF / f"{name}.json").read_text())
    kwargs = {k: v for k, v in d.items() if k not in ("model_type", "architectures", "transformers_version")}
    with torch.device("meta"):
        model = transformers.LlavaNextForConditionalGeneration(
            transformers.AutoConfig.for_model("llava_next", **kwargs))
    m = fixture(name)
    assert m.vision is not None and m.hidden_size is not None
    assert count_params(m) == sum(p.numel() for p in model.parameters())
    assert vision_tower_params(m.vision) == sum(p.numel() for p in model.model.vision_tower.parameters())
    assert projector_params(m.vision, m.hidden_size) == sum(
        p.numel() for p in model.model.multi_modal_projector.parameters())
    assert image_newline_params(m.vision, m.hidden_size) == model.model.image_newline.numel()


@pytest.mark.parametrize(("preset", "name"), [("llava-v1.6-mistral-7b", NAMES[0]), ("llava-v1.6-vicuna-7b", NAMES[1]),
                                              ("llava-v1.6-vicuna-13b", NAMES[2]), ("llava-v1.6-34b", NAMES[3])])
def test_presets_match_the_fixtures(preset: str, name: str) -> None:
    p, f = presets.find_model(preset), fixture(name)
    assert count_params(p) == count_params(f) == p.published_parameters
    assert p.vision == f.vision and p.family == f.family


def test_mistral_text_model_is_read_with_its_defaults() -> None:
    # llava-v1.6-mistral-7b's text_config leaves out hidden_size / layers / heads (MistralConfig: 4096, 32, 32)
    # and sets sliding_window null
    m = fixture(NAMES[0])
    assert (m.family, m.hidden_size, m.num_layers, m.num_attention_heads, m.num_kv_heads) == ("mistral", 4096, 32,
                                                                                               32, 8)
    assert m.vision is not None and m.vision.kind == "llava_next"
    assert m.vision.grid_pinpoints == ((336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008))


def test_image_tokens_match_the_processor() -> None:
    # LlavaNextProcessor._get_number_of_features (less the class token of the "default" strategy) and
    # image_size_to_num_patches, the library's own functions, on 2,000 image sizes
    pytest.importorskip("torch")
    from transformers.models.llava_next import modeling_llava_next
    from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor

    v = fixture(NAMES[0]).vision
    assert v is not None
    pins = [list(p) for p in v.grid_pinpoints]
    proc = types.SimpleNamespace(image_processor=types.SimpleNamespace(image_grid_pinpoints=pins), patch_size=14,
                                 num_additional_image_tokens=1)
    proc._get_unpadded_features = lambda *a: LlavaNextProcessor._get_unpadded_features(proc, *a)
    rnd = random.Random(15)
    sizes = [(672, 672), (224, 224), (1000, 500)] + [(rnd.randint(16, 3000), rnd.randint(16, 3000))
                                                     for _ in range(2000)]
    for h, w in sizes:
        assert anyres.image_tokens(v, h, w) == LlavaNextProcessor._get_number_of_features(proc, h, w, 336,
                                                                                              336) - 1
        assert anyres.tiles(v, h, w) == modeling_llava_next.image_size_to_num_patches((h, w), pins, 336)


def test_672_square_is_2928_tokens() -> None:
    # the brief's figure: 672 x 672 picks the 672 x 672 pinpoint, 2 x 2 tiles + base; 48 x 48 grid, no padding,
    # 48 newlines, 576 base: 2304 + 48 + 576
    v = presets.find_model("llava-v1.6-mistral-7b").vision
    assert v is not None
    assert anyres.best_resolution(v, 672, 672) == (672, 672)
    assert (anyres.tiles(v, 672, 672), anyres.image_tokens(v, 672, 672)) == (5, 2928)
    m = presets.find_model("llava-v1.6-mistral-7b")
    t = TrainingSpec(seq_len=100, image_size=672, images=2)
    assert vision.total_tokens(m, t) == 100 + 2 * 2928


def test_more_tiles_cost_more() -> None:
    m = presets.find_model("llava-v1.6-vicuna-7b")
    small = estimate(m, TrainingSpec(method="lora", seq_len=256, image_size=336))
    large = estimate(m, TrainingSpec(method="lora", seq_len=256, image_size=672))
    assert large.tensor_peak_bytes > small.tensor_peak_bytes
    assert large.parameters == small.parameters == count_params(m)


@pytest.mark.parametrize("kw", [{"train_vision": True, "method": "lora"}, {"attention": "eager"},
                                {"image_size": 40_000}, {"mode": "inference"}, {"method": "freeze"}])
def test_refusals(kw: dict[str, object]) -> None:
    m = presets.find_model("llava-v1.6-mistral-7b")
    with pytest.raises((UnsupportedCombination, SpecError)):
        estimate(m, TrainingSpec(**{"seq_len": 64, **kw}))  # type: ignore[arg-type]


def test_pinpoints_are_checked() -> None:
    v = presets.find_model("llava-v1.6-mistral-7b").vision
    assert v is not None
    with pytest.raises(SpecError):
        replace(v, grid_pinpoints=((336, 500),))
    with pytest.raises(SpecError):
        replace(v, grid_pinpoints=())
    with pytest.raises(SpecError):
        VisionSpec(grid_pinpoints=((336, 672),))  # a CLIP (LLaVA-1.5) tower has none


def test_explain_shows_the_anyres_arithmetic() -> None:
    from vramcalc.core.explain import explain

    m = presets.find_model("llava-v1.6-mistral-7b")
    ex = explain(m, TrainingSpec(method="lora", seq_len=512, image_size=672))
    lines = {ln.key: ln.value for s in ex.sections for ln in s.lines}
    # 672 x 672: the 672 x 672 pinpoint, 2 x 2 tiles + base, 48 x 48 + 48 + 576 tokens, + 512 text
    assert (lines["vision.tiles"], lines["vision.image_tokens"], lines["vision.tokens"]) == (5, 2928, 3440)


def test_cli_refuses_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import invoke

    code, out, err = invoke(["estimate", "llava-v1.6-vicuna-7b", "--train-vision", "--method", "lora"], capsys)
    assert code == 2 and "--train-vision" in err and len(err.strip().splitlines()) == 1


# A LLaVA-NeXT small enough to trace in seconds: the published vicuna-7b config's 24-layer tower cut to 2 layers,
# under a toy language model (2 layers of width 256, 1,000-token vocabulary) where the image side is the peak.
def tiny() -> ModelSpec:
    m = fixture(NAMES[1])
    assert m.vision is not None
    return replace(m, num_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_kv_heads=2,
                   vocab_size=1000, vision=replace(m.vision, num_layers=2))


@pytest.mark.parametrize("kw", [{"method": "lora", "grad_checkpointing": True},
                                {"method": "full", "precision": "pure-bf16"},
                                {"method": "full", "precision": "pure-bf16", "train_vision": True},
                                {"method": "full", "precision": "pure-bf16", "train_vision": True,
                                 "grad_checkpointing": True}],
                         ids=["lora-gc", "full", "train-vision", "train-vision-gc"])
def test_traced_step(kw: dict[str, object]) -> None:
    # LlavaNextForConditionalGeneration on fake tensors (trace/_llava_next.py), one 672 px image (5 tiles, 2,928
    # tokens) and 64 text tokens; measured: LoRA + checkpointing -0.02 % (its peak the tower's recomputed backward),
    # full -0.05 % (the loss, beside the held image outputs), --train-vision -0.01 % (the loss, beside the trained
    # tower's saved set) and with checkpointing -0.33 % (the tower's bottom layer's quick_gelu backward)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(seq_len=64, image_size=672, **kw)  # type: ignore[arg-type]
    r, b = trace(tiny(), t), estimate(tiny(), t)
    assert r.trainable_parameters == b.trainable_parameters
    err = (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.01 <= err <= 0.01


def test_non_square_images() -> None:
    # --image-width: a 500 x 1000 (height x width) image picks the 336 x 672 pinpoint (every pinpoint keeps
    # 672 x 336 pixels; it wastes the least): 2 + 1 tiles, a 24 x 48 grid with no padding, 24 newlines, 576 base
    m = presets.find_model("llava-v1.6-mistral-7b")
    t = TrainingSpec(seq_len=100, image_size=500, image_width=1000)
    assert anyres.image_shape(t) == (500, 1000)
    assert vision.total_tokens(m, t) == 100 + 24 * 48 + 24 + 576
    wide = estimate(m, replace(t, method="lora"))
    square = estimate(m, TrainingSpec(method="lora", seq_len=100, image_size=1000))
    assert wide.tensor_peak_bytes < square.tensor_peak_bytes  # 3 tiles and 1,752 tokens against 5 and 2,928


@pytest.mark.parametrize("preset", ["llava-1.5-7b", "qwen2-vl-2b-instruct", "mistral-7b"])
def test_image_width_is_refused_elsewhere(preset: str) -> None:
    with pytest.raises(UnsupportedCombination, match="--image-width"):
        estimate(presets.find_model(preset), TrainingSpec(seq_len=64, image_width=500))
