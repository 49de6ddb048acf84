"""Qwen2-VL and Qwen2.5-VL (issue 15): the config reader and the parameter counts against transformers, the
VisionSpec checks, and the one-line refusal of a step until the activations are modelled (memory/vision.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.params import count_params, projector_params, vision_tower_params
from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FIXTURES = ["qwen2-vl-2b-instruct", "qwen2-vl-7b-instruct", "qwen2.5-vl-3b-instruct", "qwen2.5-vl-7b-instruct"]


def load(name: str) -> dict:
    return json.loads((HF / f"{name}.json").read_text())


def spec(name: str) -> ModelSpec:
    return spec_from_hf_config(load(name), name, str(HF / f"{name}.json"))


def _library_model(d: dict):  # noqa: ANN202 - a transformers model
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cls = (transformers.Qwen2VLForConditionalGeneration if d["model_type"] == "qwen2_vl"
           else transformers.Qwen2_5_VLForConditionalGeneration)
    with torch.device("meta"):
        return cls(cls.config_class.from_dict(d))


@pytest.mark.parametrize("name", FIXTURES)
def test_count_matches_the_library(name: str) -> None:
    # sum(p.numel()) of the model class built from the same config.json on the meta device; the tower (visual
    # without its merger) and the merger one by one
    model = _library_model(load(name))
    m = spec(name)
    assert m.vision is not None
    merger = sum(p.numel() for p in model.model.visual.merger.parameters())
    assert count_params(m) == sum(p.numel() for p in model.parameters())
    assert projector_params(m.vision, m.hidden_size or 0) == merger
    assert vision_tower_params(m.vision) == sum(p.numel() for p in model.model.visual.parameters()) - merger


@pytest.mark.parametrize("name", ["qwen2-vl-2b-instruct", "qwen2.5-vl-7b-instruct"])
def test_nested_text_config_reads_the_same(name: str) -> None:
    # transformers 5 writes the config nested (text_config; Qwen2VLConfig.__post_init__ moves the flat keys there):
    # the library's own to_dict() of the published file reads to the same architecture and count
    model = _library_model(load(name))
    nested = model.config.to_dict()
    assert isinstance(nested.get("text_config"), dict)
    a, b = spec(name), spec_from_hf_config(nested, name, "nested.json")
    assert b.vision == a.vision
    assert count_params(b) == count_params(a)
    assert (b.hidden_size, b.num_layers, b.num_kv_heads, b.tie_word_embeddings) == (
        a.hidden_size, a.num_layers, a.num_kv_heads, a.tie_word_embeddings)


def test_fields() -> None:
    # the published vision_config: Qwen2-VL embed_dim 1280 x mlp_ratio 4, the merger out to the text width (its
    # vision_config.hidden_size); Qwen2.5-VL width 1280, SwiGLU 3420, 112 px windows, full attention in 7/15/23/31
    v2 = spec("qwen2-vl-2b-instruct").vision
    assert v2 is not None
    assert (v2.kind, v2.hidden_size, v2.intermediate_size, v2.out_hidden_size) == ("qwen2_vl", 1280, 5120, 1536)
    assert (v2.window_size, v2.fullatt_block_indexes, v2.image_size) == (0, (), 0)
    v25 = spec("qwen2.5-vl-3b-instruct").vision
    assert v25 is not None
    assert (v25.kind, v25.intermediate_size, v25.out_hidden_size) == ("qwen2_5_vl", 3420, 2048)
    assert (v25.window_size, v25.fullatt_block_indexes) == (112, (7, 15, 23, 31))
    m = spec("qwen2.5-vl-3b-instruct")
    assert (m.family, m.qkv_bias, m.tie_word_embeddings) == ("qwen2", True, True)


def test_presets_equal_their_configs() -> None:
    for name in FIXTURES:
        preset = presets.find_model(name)
        assert preset.vision == spec(name).vision
        assert count_params(preset) == preset.published_parameters == count_params(spec(name))


def test_vision_spec_checks() -> None:
    ok = {"kind": "qwen2_vl", "hidden_size": 64, "intermediate_size": 256, "num_attention_heads": 4,
          "num_layers": 2, "image_size": 0, "out_hidden_size": 32}
    VisionSpec(**ok)
    for bad in ({"image_size": 448}, {"out_hidden_size": 0}, {"kind": "qwen2_5_vl", "fullatt_block_indexes": (2,)},
                {"kind": "qwen2_5_vl", "window_size": 100}):
        with pytest.raises(SpecError):
            VisionSpec(**{**ok, **bad})
    with pytest.raises(SpecError):  # a CLIP tower keeps its fixed size
        VisionSpec(image_size=0)


def test_bad_vision_config_is_one_problem() -> None:
    d = load("qwen2.5-vl-3b-instruct")
    for change in ({"hidden_act": "gelu"}, {"depth": "32"}, {"fullatt_block_indexes": [7, "x"]}):
        with pytest.raises(Exception) as e:  # noqa: PT011 - PresetFileError, checked by its text
            spec_from_hf_config({**d, "vision_config": {**d["vision_config"], **change}}, "x", "x.json")
        assert "vision_config" in str(e.value) or "hidden_act" in str(e.value)


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_a_step_is_refused_naming_what_is_missing(method: str) -> None:
    with pytest.raises(UnsupportedCombination, match="dynamic-resolution image tokens") as e:
        estimate(presets.find_model("qwen2.5-vl-7b-instruct"), TrainingSpec(method=method))
    assert "Qwen2.5-VL" in str(e.value) and "M-RoPE" in str(e.value)


def test_cli_refuses_in_one_line_and_shows_the_count(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = invoke(["estimate", "qwen2-vl-2b-instruct", "--method", "lora"], capsys)
    lines = err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and "Qwen2-VL" in lines[0] and "not modelled yet" in lines[0]
    code, out, _ = invoke(["show", "Qwen/Qwen2-VL-2B-Instruct"], capsys)
    assert code == 0 and "2,208,985,600" in out
