"""Vision-language models (issue 15): LLaVA-1.5's counts against transformers, the image tokens added to the text
sequence, the image side's terms (memory/vision.py), the refusals, and two traced steps."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cli_helpers import invoke
from vramcalc.core.errors import SpecError, UnsupportedCombination
from vramcalc.core.memory import estimate, vision
from vramcalc.core.params import count_params, projector_params, vision_tower_params
from vramcalc.core.specs import ModelSpec, TrainingSpec, VisionSpec
from vramcalc.io import presets
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"


def llava() -> ModelSpec:
    path = HF / "llava-1.5-7b-hf.json"
    return spec_from_hf_config(json.loads(path.read_text()), "llava-1.5-7b-hf", str(path))


def test_count_matches_the_library() -> None:
    # sum(p.numel()) of LlavaForConditionalGeneration built from the same config.json on the meta device, and its
    # vision_tower / multi_modal_projector children one by one
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    d = json.loads((HF / "llava-1.5-7b-hf.json").read_text())
    kwargs = {k: v for k, v in d.items() if k not in ("model_type", "architectures", "transformers_version")}
    with torch.device("meta"):
        model = transformers.LlavaForConditionalGeneration(transformers.AutoConfig.for_model("llava", **kwargs))
    m = llava()
    assert m.vision is not None
    assert count_params(m) == sum(p.numel() for p in model.parameters())
    assert vision_tower_params(m.vision) == sum(p.numel() for p in model.model.vision_tower.parameters())
    assert projector_params(m.vision, 4096) == sum(p.numel() for p in model.model.multi_modal_projector.parameters())


def test_published_config_fields() -> None:
    # llava-hf/llava-1.5-7b-hf: a Vicuna-7B text model (LlamaConfig's defaults for what text_config leaves out),
    # CLIP ViT-L/14 at 336 px, vision_feature_layer -2
    m = llava()
    assert (m.family, m.hidden_size, m.num_layers, m.intermediate_size, m.vocab_size) == ("llama", 4096, 32, 11008,
                                                                                           32064)
    assert m.vision == VisionSpec(num_layers=24, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                  patch_size=14, image_size=336, feature_layer=-2)
    # the preset of the same name is the same model
    assert replace(presets.find_model("llava-1.5-7b"), name=m.name, display_name=m.display_name, source=m.source,
                   aliases=m.aliases, published_parameters=None, published_parameters_source=None) == m


def test_image_tokens_are_added_to_the_text() -> None:
    # (336 / 14)^2 = 576 patches, the class token dropped (LLaVA-1.5: 576 image tokens per image)
    m = llava()
    assert m.vision is not None and vision.image_tokens(m.vision) == 576
    t = TrainingSpec(seq_len=512, images=2)
    assert vision.total_tokens(m, t) == 512 + 2 * 576
    # the language model's part is the text model's estimate on that many tokens
    text_model, text_run = vision.text_run(m, t)
    assert text_run.seq_len == 1664 and text_model.vision is None
    text = estimate(text_model, text_run)
    b = estimate(m, t)
    tower, projector = vision_tower_params(m.vision), projector_params(m.vision, 4096)
    assert b.parameters == text.parameters + tower + projector == 7_063_427_072
    assert b.weights - text.weights == (tower + projector) * 2  # bf16
    # full fine-tuning trains the projector, the tower stays frozen
    assert b.trainable_parameters == text.trainable_parameters + projector
    assert b.gradients == text.gradients * (text.trainable_parameters + projector) // text.trainable_parameters
    assert b.tensor_peak_bytes > text.tensor_peak_bytes
    assert b.details["activations.pixel_values"] == 2 * 3 * 336 * 336 * 2


def test_lora_targets_reach_the_tower() -> None:
    m = llava()
    # the language model's own names (o_proj, down_proj): nothing of the image side is adapted or saved
    t = TrainingSpec(method="lora", seq_len=256, lora_targets=("o_proj", "down_proj"))
    text_model, text_run = vision.text_run(m, t)
    b, text = estimate(m, t), estimate(text_model, text_run)
    assert b.trainable_parameters == text.trainable_parameters == 32 * 16 * (2 * 4096 + 11008 + 4096)
    assert b.gradients == text.gradients
    # without checkpointing nothing of the image side is saved (the tower and projector run without grad)
    assert b.details["activations.image_side_saved"] == 0
    # with checkpointing enable_input_require_grads runs the tower with grad: (24 + 1) kept tower tensors of
    # 577 x 1024, the projector's GELU input (576 x 4096), the text embeddings' leaf (832 x 4096) and the mask
    ck = estimate(m, replace(t, grad_checkpointing=True))
    assert ck.details["activations.image_side_saved"] == (25 * 577 * 1024 + 576 * 4096 + 832 * 4096) * 2 + 832
    # the default q_proj, v_proj also name every CLIP layer's (peft matches a name's suffix anywhere:
    # tests/test_clip_lora.py): 24 layers x 2 x r 16 x (1024 + 1024) more, in fp32; the top layer, above the
    # feature layer (-2), gets no gradient
    d = estimate(m, TrainingSpec(method="lora", seq_len=256))
    tower = 2 * 16 * (1024 + 1024)
    assert d.trainable_parameters == 32 * 2 * 16 * (4096 + 4096) + 24 * tower
    assert d.gradients == 4 * (32 * 2 * 16 * (4096 + 4096) + 23 * tower)
    assert d.details["activations.image_side_saved"] > 0  # the tower's saved sets for the adapters' backward


def test_one_image_by_default_and_more_cost_more() -> None:
    m = presets.find_model("llava-1.5-13b")
    one, default = estimate(m, TrainingSpec(images=1)), estimate(m, TrainingSpec())
    assert one.phases == default.phases
    assert estimate(m, TrainingSpec(images=3)).tensor_peak_bytes > one.tensor_peak_bytes


@pytest.mark.parametrize(("model", "kw", "error"), [
    ("llava-1.5-7b", {"image_size": 448}, SpecError),
    ("llava-1.5-7b", {"train_vision": True, "method": "lora"}, UnsupportedCombination),
    ("llava-1.5-7b", {"train_vision": True, "attention": "eager"}, UnsupportedCombination),
    ("llava-1.5-7b", {"mode": "inference"}, UnsupportedCombination),
    ("llava-1.5-7b", {"method": "ia3"}, UnsupportedCombination),
    ("llava-1.5-7b", {"objective": "dpo"}, UnsupportedCombination),
    ("tinyllama-1.1b", {"images": 2}, UnsupportedCombination),
    ("tinyllama-1.1b", {"train_vision": True}, UnsupportedCombination),
])
def test_refusals(model: str, kw: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        estimate(presets.find_model(model), TrainingSpec(**kw))  # type: ignore[arg-type]


def test_cli_refuses_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "llava-1.5-7b", "--image-size", "448"], capsys)
    assert code == 2
    assert err.strip() == ("error: --image-size: llava-1.5-7b's CLIP tower takes 336 px images only (its learned "
                           "positions are fixed; the processor resizes): drop --image-size or give 336")
    code, out, err = invoke(["estimate", "mistral-7b", "--images", "2"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in out + err


def test_cli_prints_the_total_tokens(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "llava-1.5-7b", "--method", "lora", "--seq-len", "300", "--images", "2",
                             "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    expected = estimate(presets.find_model("llava-1.5-7b"), TrainingSpec(method="lora", seq_len=300, images=2))
    assert doc["tensor_peak_bytes"] == expected.tensor_peak_bytes
    assert any("runs on 1,452 tokens per sample" in n for n in doc["notes"])  # 300 + 2 x 576


def test_bad_vision_config_is_one_error() -> None:
    from vramcalc.core.errors import PresetFileError

    d = json.loads((HF / "llava-1.5-7b-hf.json").read_text())
    d["vision_config"]["image_size"] = 330  # not a multiple of the 14 px patch
    with pytest.raises(PresetFileError, match="not a multiple of patch_size"):
        spec_from_hf_config(d, "x", "x.json")
    d["vision_config"]["image_size"] = "336"
    with pytest.raises(PresetFileError, match="vision_config.image_size"):
        spec_from_hf_config(d, "x", "x.json")


# A small LLaVA with LLaVA-1.5's proportions (CLIP width a quarter of the text width, MLP 4x, 14 px patches), for
# traces of a few seconds.
TINY = ModelSpec(name="tiny-llava", source="tests/test_vision.py", family="llama", vocab_size=1024, hidden_size=256,
                 intermediate_size=688, num_layers=4, num_attention_heads=4, max_position_embeddings=2048,
                 vision=VisionSpec(num_layers=3, hidden_size=128, intermediate_size=512, num_attention_heads=4,
                                   patch_size=14, image_size=112))


@pytest.mark.parametrize("kw", [{"method": "full"}, {"method": "lora", "grad_checkpointing": True}],
                         ids=["full", "lora-gc"])
def test_traced_step(kw: dict[str, object]) -> None:
    # The tracer runs LlavaForConditionalGeneration on fake tensors (trace/_vision.py); measured: full +0.06 %,
    # LoRA with checkpointing +1.31 % (the text model's own estimate at these tiny widths is +1.55 % there)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(seq_len=128, batch_size=2, **kw)  # type: ignore[arg-type]
    r, b = trace(TINY, t), estimate(TINY, t)
    assert r.trainable_parameters == b.trainable_parameters
    err = (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.02 <= err <= 0.03


def test_timeline_draws_the_tower_first() -> None:
    # the tower's no-grad forward is the step's first moment (memory/vision.py), drawn before the layers
    from vramcalc.core.memory.timeline import timeline

    points = timeline(presets.find_model("llava-1.5-7b"), TrainingSpec(method="lora")).points
    assert points[0].label == "vision tower (no grad)"
    assert max(p.total_bytes for p in points) <= estimate(presets.find_model("llava-1.5-7b"),
                                                          TrainingSpec(method="lora")).tensor_peak_bytes


def test_presets_new_writes_the_image_side(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # `presets new` from LLaVA's config.json writes `vision:` as a mapping that the preset loader reads back
    import yaml

    from vramcalc.io import validate

    (tmp_path / "config.json").write_text((HF / "llava-1.5-7b-hf.json").read_text())
    code, out, err = invoke(["presets", "new", "--from", str(tmp_path / "config.json")], capsys)
    assert code == 0, err
    (entry,) = yaml.safe_load(out)
    spec, problems = validate.check(ModelSpec, entry)
    assert problems == [] and spec is not None
    assert spec.vision == llava().vision and count_params(spec) == 7_063_427_072


def test_train_vision_trains_the_tower() -> None:
    # --train-vision: the tower's parameters train too; the last CLIP layer (above vision_feature_layer -2) and
    # post_layernorm get no gradient and no AdamW state (their output never reaches the loss: measured with the
    # tracer, the optimizer step is 233,935,360 B above the frozen tower's on a 4-layer tower, the estimate
    # 233,908,224 B)
    m = llava()
    assert m.vision is not None
    t = TrainingSpec(seq_len=512)
    frozen, trained = estimate(m, t), estimate(m, replace(t, train_vision=True))
    tower = vision_tower_params(m.vision)
    assert trained.trainable_parameters == frozen.trainable_parameters + tower
    unreached = (4 * (1024 * 1024 + 1024) + 4 * 1024 + 2 * 1024 * 4096 + 4096 + 1024) + 2 * 1024  # one layer + LN
    per_param = frozen.gradients // frozen.trainable_parameters  # 2 B (bf16)
    assert trained.gradients - frozen.gradients == (tower - unreached) * per_param
    keys = [mo.key for mo in trained.named_moments()]
    assert "backward.vision" in keys and "backward.vision" not in [mo.key for mo in frozen.named_moments()]
    assert trained.tensor_peak_bytes > frozen.tensor_peak_bytes
