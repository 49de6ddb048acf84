"""Idefics3 / SmolVLM (issue 15): the config reader and the parameter counts against transformers, the processor's
tiles against image_processing_idefics3.py's own arithmetic, the image side of a step (memory/idefics3.py) against
the tracer (trace/_idefics3.py), and the refusals."""

from __future__ import annotations

import ast
import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate, idefics3
from vramcalc.core.params import count_params, projector_params, vision_tower_params
from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
# sum(p.numel()) of Idefics3ForConditionalGeneration (SmolVLMForConditionalGeneration for SmolVLM2) built from each
# config.json on the meta device, transformers 5.24 (test_count_matches_the_library rebuilds them); the published
# model cards say 8.46B, 2.25B, 256M, 508M and 256M
FIXTURES = {"idefics3-8b-llama3": 8_462_086_384, "smolvlm-instruct": 2_246_272_880,
            "smolvlm-256m-instruct": 256_484_928, "smolvlm-500m-instruct": 507_482_304,
            "smolvlm2-256m-video-instruct": 256_484_928}


def load(name: str) -> dict[str, Any]:
    return json.loads((HF / f"{name}.json").read_text())


def spec(name: str) -> ModelSpec:
    return spec_from_hf_config(load(name), name, str(HF / f"{name}.json"))


@pytest.mark.parametrize("name", FIXTURES)
def test_count_matches_the_library(name: str) -> None:
    # the whole model, the tower (model.vision_model) and the connector (model.connector) one by one
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = load(name)
    config = transformers.AutoConfig.for_model(d["model_type"], **{k: v for k, v in d.items() if k != "model_type"})
    with torch.device("meta"):
        model = transformers.AutoModelForImageTextToText.from_config(config)
    m = spec(name)
    assert m.vision is not None and m.hidden_size is not None
    assert count_params(m) == sum(p.numel() for p in model.parameters()) == FIXTURES[name]
    assert vision_tower_params(m.vision) == sum(p.numel() for p in model.model.vision_model.parameters())
    assert projector_params(m.vision, m.hidden_size) == sum(p.numel() for p in model.model.connector.parameters())


def test_fields() -> None:
    # the published shapes: Idefics3-8B's so400m tower at 364 px (26 x 26 patches, scale 2: 169 tokens a tile);
    # SmolVLM 2.2B's at 384 px over 14 px patches (27 a side, the last 6 px dropped; scale 3: 81); SmolVLM 256M's
    # SigLIP base at 512 px / 16 (scale 4: 64), the processor's longest edge 4 tiles
    v8 = spec("idefics3-8b-llama3").vision
    assert v8 is not None
    assert (v8.kind, v8.scale_factor, v8.image_size, v8.longest_edge, idefics3.tokens_per_tile(v8)) == (
        "idefics3", 2, 364, 4 * 364, 169)
    v2 = spec("smolvlm-instruct").vision
    assert v2 is not None
    assert (v2.scale_factor, v2.longest_edge, idefics3.tokens_per_tile(v2)) == (3, 1536, 81)
    v256 = spec("smolvlm-256m-instruct").vision
    assert v256 is not None
    assert (v256.scale_factor, v256.longest_edge, idefics3.tokens_per_tile(v256)) == (4, 2048, 64)
    m = spec("smolvlm-256m-instruct")
    assert (m.family, m.tie_word_embeddings, m.num_kv_heads) == ("llama", False, 3)


def test_presets_equal_their_configs() -> None:
    for name in FIXTURES:
        preset = presets.find_model(name)
        assert preset.vision == spec(name).vision
        assert count_params(preset) == preset.published_parameters == count_params(spec(name))


def test_vision_spec_checks() -> None:
    ok = {"kind": "idefics3", "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4,
          "num_layers": 2, "image_size": 64, "patch_size": 16, "scale_factor": 2, "longest_edge": 256,
          "feature_layer": -1, "drop_cls": False}
    VisionSpec(**ok)
    for bad in ({"scale_factor": 3}, {"scale_factor": 0}, {"longest_edge": 32}, {"drop_cls": True}):
        with pytest.raises(SpecError):
            VisionSpec(**{**ok, **bad})
    with pytest.raises(SpecError):  # the Idefics3 fields on another kind
        VisionSpec(scale_factor=2)


def test_bad_config_is_one_problem() -> None:
    d = load("smolvlm-256m-instruct")
    for change in ({"vision_config": {**d["vision_config"], "hidden_act": "gelu"}},
                   {"vision_config": {**d["vision_config"], "max_image_size": {"longest_edge": 384}}},
                   {"scale_factor": 3}, {"scale_factor": "4"},
                   {"text_config": {**d["text_config"], "model_type": "mistral"}}):
        with pytest.raises(Exception) as e:  # noqa: PT011 - PresetFileError, checked by its text
            spec_from_hf_config({**d, **change}, "x", "x.json")
        assert "x.json" in str(e.value)


def _library_arithmetic() -> dict[str, Any]:
    """image_processing_idefics3.py's resize helpers and resize_for_vision_encoder as the library writes them (its
    module needs torchvision to import): their source read from the installed file and run on sizes, with the
    image a (height, width) pair and self.resize answering the size asked for."""
    transformers = pytest.importorskip("transformers")
    path = Path(transformers.__file__).parent / "models" / "idefics3" / "image_processing_idefics3.py"
    tree = ast.parse(path.read_text())
    wanted = {"_resize_output_size_rescale_to_max_len", "_resize_output_size_scale_below_upper_bound",
              "resize_for_vision_encoder", "MAX_IMAGE_SIZE"}
    nodes: list[ast.stmt] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in wanted:
            node.returns = None
            for a in [*node.args.args, *node.args.kwonlyargs]:
                a.annotation = None
            nodes.append(node)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", "") in wanted for t in node.targets):
            nodes.append(node)
    assert len(nodes) == 4
    scope: dict[str, Any] = {"math": math, "SizeDict": SimpleNamespace}
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), scope)  # noqa: S102
    return scope


def _library_grid(lib: dict[str, Any], v: VisionSpec, height: int, width: int) -> tuple[int, int]:
    h, w = lib["_resize_output_size_rescale_to_max_len"](height, width, max_len=v.longest_edge)
    h, w = lib["_resize_output_size_scale_below_upper_bound"](h, w, max_len=lib["MAX_IMAGE_SIZE"])
    image = SimpleNamespace(size=lambda: (h, w))
    this = SimpleNamespace(resize=lambda image, size, resample=None: (size.height, size.width))
    h, w = lib["resize_for_vision_encoder"](this, image, v.image_size)
    # split_images: ceil(height / tile) x ceil(width / tile) tiles when either edge is over one tile
    if h > v.image_size or w > v.image_size:
        return math.ceil(h / v.image_size), math.ceil(w / v.image_size)
    return 0, 0


@pytest.mark.parametrize("name", ["idefics3-8b-llama3", "smolvlm-instruct", "smolvlm-256m-instruct"])
def test_tiles_match_the_processor(name: str) -> None:
    # 2,300 image sizes per model, from 1 px to 4,000 px a side, through the library's own resize steps
    lib = _library_arithmetic()
    v = presets.find_model(name).vision
    assert v is not None
    sizes = [(h, w) for h in range(1, 4000, 83) for w in range(1, 4000, 79)] + [(v.image_size, v.image_size)]
    for h, w in sizes:
        t = TrainingSpec(image_size=h, image_width=w)
        assert idefics3.grid(v, t) == _library_grid(lib, v, h, w), (h, w)


def test_default_image_is_square_and_tokens_follow_the_processor() -> None:
    # the default: a square image, resized to 1,456 px and cut into 4 x 4 tiles of 364 and a global image; the
    # processor's text (processing_idefics3.py _get_num_multimodal_tokens): 169 + 3 around the global image, each
    # row 4 x (169 + 2) + 1: 2,912 tokens per image
    m = presets.find_model("idefics3-8b-llama3")
    v = m.vision
    assert v is not None
    t = TrainingSpec(seq_len=100)
    assert idefics3.grid(v, t) == (4, 4) and idefics3.tiles_per_image(v, t) == 17
    assert idefics3.image_tokens_per_image(v, t) == 169 + 3 + 4 * (4 * (169 + 2) + 1) == 2912
    assert idefics3.total_tokens(m, t) == 100 + 2912
    # a small image is upscaled first (the longest edge to 1,456): 364 x 100 -> 1,456 x 400 -> 1,456 x 728
    assert idefics3.grid(v, replace(t, image_size=364, image_width=100)) == (4, 2)
    wide = replace(t, image_size=300, image_width=900)  # 1,456 x 485 -> 1,456 x 728: 2 x 4 tiles + 1
    assert idefics3.grid(v, wide) == (2, 4) and idefics3.tiles_per_image(v, wide) == 9


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_image_tokens_lengthen_the_text_run(method: str) -> None:
    m = presets.find_model("smolvlm-256m-instruct")
    t = TrainingSpec(method=method, seq_len=256)
    text_model, text_run = idefics3.text_run(m, t)
    b, text = estimate(m, t), estimate(text_model, text_run)
    assert text_run.seq_len == 256 + 17 * 64 + 3 + 4 * (4 * 2 + 1)
    assert b.parameters == count_params(m)
    assert b.tensor_peak_bytes > text.tensor_peak_bytes
    assert b.trainable_parameters == text.trainable_parameters + (
        projector_params(m.vision, 576) if method == "full" and m.vision else 0  # the connector trains in full
        # LoRA's default q_proj, v_proj also adapt the tower's (peft matches names over the whole model,
        # memory/siglip_lora.py): 12 layers x 2 x rank 16 x (768 in + 768 out), SigLIP base's widths
        + (12 * 2 * 16 * (768 + 768) if method != "full" else 0))


def test_refusals_name_the_fix() -> None:
    m = presets.find_model("smolvlm-256m-instruct")
    with pytest.raises(UnsupportedCombination, match="--method full"):
        estimate(m, TrainingSpec(method="lora", train_vision=True))
    with pytest.raises(SpecError, match="aspect ratio"):
        estimate(m, TrainingSpec(image_size=1, image_width=500))
    with pytest.raises(UnsupportedCombination, match="--image-width"):  # a square-image model refuses it
        estimate(presets.find_model("llava-1.5-7b"), TrainingSpec(image_width=640))
    with pytest.raises(UnsupportedCombination, match="--image-width"):
        estimate(presets.find_model("tinyllama-1.1b"), TrainingSpec(image_width=640))


def test_cli_estimates_and_explains(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "smolvlm-256m-instruct", "--method", "lora", "--image-size", "300",
                             "--image-width", "900"], capsys)
    assert code == 0, err
    assert "2 x 4" in out and "9 tile(s)" in out
    code, out, err = invoke(["explain", "smolvlm-256m-instruct", "--method", "full", "--format", "json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert "vision.tiles" in json.dumps(data)
    code, _, err = invoke(["estimate", "smolvlm-256m-instruct", "--method", "lora", "--train-vision"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1


def _toy(name: str, text_layers: int = 2, tower_layers: int = 2) -> ModelSpec:
    """A published config with both stacks cut and a toy language model, so that the image side is the peak."""
    m = presets.find_model(name)
    assert m.vision is not None
    return replace(m, num_layers=text_layers, hidden_size=256, intermediate_size=512, num_attention_heads=4,
                   num_kv_heads=2, vocab_size=1000, head_dim=None, vision=replace(m.vision, num_layers=tower_layers))


@pytest.mark.parametrize("kw", [{"method": "lora", "precision": "pure-bf16"},
                                {"method": "lora", "precision": "pure-bf16", "grad_checkpointing": True,
                                 "attention": "eager"},
                                {"method": "full", "precision": "pure-bf16", "train_vision": True}])
def test_traced_image_side_peak(kw: dict[str, Any]) -> None:
    # SmolVLM 256M's tower (17 tiles of 1,024 patches) and connector on a toy language model: the image side is
    # the peak (the forward's gelu, the eager softmax backward, the connector's pixel_shuffle copy); measured
    # -0.00 %, -0.00 % and +0.02 % when written
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = _toy("smolvlm-256m-instruct"), TrainingSpec(seq_len=128, **kw)  # type: ignore[arg-type]
    r, b = trace(m, t), estimate(m, t)
    assert abs(b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.01
    assert b.peak_phase == r.peak_phase
