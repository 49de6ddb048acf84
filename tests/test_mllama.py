"""Llama-3.2-Vision (mllama, issue 15): the config reader and the parameter counts against transformers'
MllamaForConditionalGeneration, the VisionSpec checks, the presets, a step's memory (core/memory/mllama.py) by hand
and against the tracer (trace/_mllama.py), and the one-line refusals of what it does not model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import PresetFileError, SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.mllama import cross_layer_delta, tower_rows, vision_rows
from vramcalc.core.params import count_params, mllama_text_extra_params, projector_params, vision_tower_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FIXTURES = ["llama-3.2-11b-vision-instruct", "llama-3.2-90b-vision-instruct"]


def load(name: str) -> dict:
    return json.loads((HF / f"{name}.json").read_text())


def spec(name: str) -> ModelSpec:
    return spec_from_hf_config(load(name), name, str(HF / f"{name}.json"))


def _library_model(d: dict):  # noqa: ANN202 - a transformers model
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cls = transformers.MllamaForConditionalGeneration
    with torch.device("meta"):
        return cls(transformers.MllamaConfig.from_dict(d))


@pytest.mark.parametrize("name", FIXTURES)
def test_count_matches_the_library(name: str) -> None:
    # sum(p.numel()) of MllamaForConditionalGeneration built from the config.json on the meta device; the tower
    # (model.vision_model), the projector (model.multi_modal_projector) and the text model's extras one by one
    model = _library_model(load(name))
    m = spec(name)
    assert m.vision is not None
    tower = sum(p.numel() for p in model.model.vision_model.parameters())
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    assert count_params(m) == sum(p.numel() for p in model.parameters())
    assert vision_tower_params(m.vision) == tower
    assert projector_params(m.vision, m.hidden_size or 0) == projector
    # the extras: embed_tokens' 8 rows beyond vocab_size, and per cross-attention layer q_norm / k_norm (head_dim
    # each) and its two gates, as the library's own parameter names say
    text = model.model.language_model
    extra = (text.embed_tokens.weight.shape[0] - m.vocab_size) * m.hidden_size + sum(
        p.numel() for n, p in text.named_parameters() if n.endswith(("q_norm.weight", "k_norm.weight", "_gate")))
    assert mllama_text_extra_params(m) == extra


def test_published_totals() -> None:
    # the counts test_count_matches_the_library rebuilt from transformers 5.24 (tests/data/hf/README.md); 11B is
    # also Meta's model card figure (10.67B)
    assert count_params(spec("llama-3.2-11b-vision-instruct")) == 10_670_220_835
    assert count_params(spec("llama-3.2-90b-vision-instruct")) == 88_593_355_323


def test_fields() -> None:
    # the published config: a 40-layer Llama text model with cross-attention at 3, 8, ..., 38; the tower 32 + 8
    # layers of width 1280, 16 heads, 560 px tiles of 14 px patches, 4 tiles, 8 aspect ratios, 7680 = 1280 x 6
    m = spec("llama-3.2-11b-vision-instruct")
    v = m.vision
    assert v is not None
    assert (m.family, m.num_layers, m.hidden_size, m.num_kv_heads, m.tie_word_embeddings) == (
        "llama", 40, 4096, 8, False)
    assert (v.kind, v.num_layers, v.num_global_layers, v.hidden_size, v.num_attention_heads) == (
        "mllama", 32, 8, 1280, 16)
    assert (v.image_size, v.patch_size, v.max_num_tiles, v.aspect_ratios, v.vision_output_dim) == (
        560, 14, 4, 8, 7680)
    assert v.intermediate_layers_indices == (3, 7, 15, 23, 30)
    assert v.cross_attention_layers == (3, 8, 13, 18, 23, 28, 33, 38)
    assert spec("llama-3.2-90b-vision-instruct").vision.cross_attention_layers == tuple(range(3, 100, 5))


@pytest.mark.parametrize("name", FIXTURES)
def test_preset_equals_the_config(name: str) -> None:
    preset, source = presets.find_model(name), spec(name)
    assert preset.vision == source.vision
    assert count_params(preset) == count_params(source) == preset.published_parameters
    # the base checkpoints' ids are aliases of the same architecture
    base = name.replace("-instruct", "")
    assert presets.find_model(base).name == name


def test_library_defaults_fill_a_partial_config() -> None:
    # MllamaConfig fills what the file leaves out from MllamaTextConfig / MllamaVisionConfig's defaults: an empty
    # text_config is the 11B text model; the tower's default image_size is 448 (the published files give 560)
    d = {"model_type": "mllama", "text_config": {}, "vision_config": {}}
    m = spec_from_hf_config(d, "defaults", "defaults.json")
    model = _library_model(d)
    assert count_params(m) == sum(p.numel() for p in model.parameters())
    assert m.vision is not None and m.vision.image_size == 448


@pytest.mark.parametrize(("change", "message"), [
    ({"vision_config": {"hidden_act": "relu"}}, "gelu on 3 channels"),
    ({"text_config": {"tie_word_embeddings": True}}, "tied embeddings"),
    ({"text_config": {"cross_attention_layers": []}}, "cross_attention_layers"),
    ({"text_config": {"cross_attention_layers": [3, 40]}}, "below num_layers 40"),
    ({"vision_config": {"vision_output_dim": 5120}}, "vision_output_dim 5120"),
    ({"vision_config": {"intermediate_layers_indices": [3, 32]}}, "intermediate_layers_indices"),
])
def test_reader_refuses_in_one_line(change: dict, message: str) -> None:
    d = load("llama-3.2-11b-vision-instruct")
    for k, v in change.items():
        d[k] = {**d[k], **v}
    with pytest.raises((PresetFileError, SpecError)) as e:
        spec_from_hf_config(d, "x", "x.json")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_mllama_fields_belong_to_mllama() -> None:
    v = presets.find_model("llava-1.5-7b").vision
    assert v is not None
    with pytest.raises(SpecError, match="kind mllama"):
        replace(v, num_global_layers=8)


@pytest.mark.parametrize(("change", "message"), [
    ({"train_vision": True}, "--train-vision"),  # with --method lora: the tower is trained by full fine-tuning only
    ({"attention": "eager"}, "--attention eager"),
    ({"mode": "inference"}, "--mode inference"),
    ({"precision": "amp-bf16"}, "pure 16-bit"),
    ({"method": "ia3"}, "--method ia3"),
    ({"packing": "packed"}, "--packing"),
    ({"lora_dropout": 0.05}, "--lora-dropout"),
])
def test_what_is_not_modelled_is_refused(change: dict, message: str) -> None:
    with pytest.raises(UnsupportedCombination, match=message) as e:
        estimate(presets.find_model("llama-3.2-11b-vision-instruct"), TrainingSpec(**{"method": "lora", **change}))
    assert "\n" not in str(e.value)


def test_cli_estimates_and_explains(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "llama-3.2-11b-vision-instruct", "--method", "lora", "--images", "2",
                             "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["parameters"] == 10_670_220_835
    assert any("Llama-3.2-Vision" in n for n in doc["notes"])
    code, out, err = invoke(["explain", "llama-3.2-11b-vision-instruct", "--method", "qlora",
                             "--grad-checkpointing"], capsys)
    assert code == 0, err
    assert "vision rows each cross-attention layer attends over" in out
    code, _, err = invoke(["estimate", "llama-3.2-11b-vision-instruct", "--attention", "eager"], capsys)
    assert code == 2 and err.count("\n") == 1


def _toy() -> ModelSpec:
    # the published 11B config with the text model cut to 4 layers of width 256 (cross-attention at 1 and 3) and the
    # tower to 4 local + 1 global layers (benchmarks/accuracy.py mllama:toy)
    m = spec("llama-3.2-11b-vision-instruct")
    assert m.vision is not None
    v = replace(m.vision, num_layers=4, num_global_layers=1, intermediate_layers_indices=(1, 3),
                vision_output_dim=1280 * 3, cross_attention_layers=(1, 3))
    return replace(m, num_layers=4, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_kv_heads=2,
                   vocab_size=1000, vision=v)


def test_tower_rows_and_vision_rows() -> None:
    # modeling_mllama.py: (560 / 14)^2 patches + the class token = 1,601 rows a tile, padded to 1,608 (a multiple
    # of 8); the local encoder runs the 4 tiles of an image as one sequence; each cross-attention layer attends
    # over images x 4 x 1,601 rows (the projector's output reshaped per tile)
    m = presets.find_model("llama-3.2-11b-vision-instruct")
    assert m.vision is not None
    assert tower_rows(m.vision) == (1601, 4 * 1608)
    assert vision_rows(m, TrainingSpec(images=3)) == 3 * 4 * 1601


def test_cross_layer_delta_by_hand() -> None:
    # LoRA (auto: q_proj, v_proj; adapters fp32) on the 11B text model, batch 1 x 128 tokens, one image
    # (6,404 vision rows), no checkpointing: what a cross-attention layer saves beyond the decoder path's self-attention
    # layer (modeling_mllama.py MllamaTextCrossAttention; trace/_cuda.py _FusedAttention / _attn_bias)
    m = presets.find_model("llama-3.2-11b-vision-instruct")
    t, rows, q, kv = 128, 6404, 4096, 1024
    self_attn = t * (2 * (2 * q + 2 * kv) + 4 * 32) + t * (4 * 4096 + 4 * 16)  # flash q, k, v, out, lse; v adapter
    q_norm = t * (4 * q + 4 * 32)  # fp32 copy of q and rsqrt per head
    v_adapter = rows * (4 * 4096 + 4 * 16)  # the states' fp32 copy and lora_A's output
    sdpa = t * 2 * 2 * q + rows * 2 * 2 * q + 32 * 128 * 4 + t * 6416 * 2  # q, out; k, v repeated; lse; the bias
    delta, _ = cross_layer_delta(m, TrainingSpec(method="lora", seq_len=128, images=1), states_grad=False)
    assert delta == q_norm + v_adapter + sdpa - self_attn


@pytest.mark.parametrize(("method", "gc"), [("lora", True), ("full", False)])
def test_traced_step(method: str, gc: bool) -> None:
    # the tracer on the toy cut (MllamaForConditionalGeneration on fake CUDA tensors): the estimate within 1 % of
    # the traced tensor peak, and never under it by more than 1 %
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = _toy()
    t = TrainingSpec(method=method, precision="bf16", grad_checkpointing=gc, seq_len=16, images=2)
    got, est = trace(m, t).peak_bytes, estimate(m, t).tensor_peak_bytes
    assert abs(est - got) <= 0.01 * got, (est, got)


@pytest.mark.parametrize("gc", [False, True])
def test_traced_train_vision(gc: bool) -> None:
    # --train-vision on the toy cut (full pure-bf16, the 4 + 1 layer tower trained; benchmarks/accuracy.py mllama
    # grid): measured +0.47 % with and without checkpointing (the tower's layers save their whole graph either way),
    # the peak at the start of the tower's backward; its trainable parameters are the library's requires_grad ones
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = _toy()
    t = TrainingSpec(method="full", precision="pure-bf16", train_vision=True, grad_checkpointing=gc, seq_len=16,
                     images=2)
    r, b = trace(m, t), estimate(m, t)
    assert r.trainable_parameters == b.trainable_parameters
    frozen = estimate(m, replace(t, train_vision=False))
    assert b.trainable_parameters - frozen.trainable_parameters == vision_tower_params(m.vision)  # type: ignore[arg-type]
    assert abs(b.tensor_peak_bytes - r.peak_bytes) <= 0.01 * r.peak_bytes, (b.tensor_peak_bytes, r.peak_bytes)
