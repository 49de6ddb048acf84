"""Gemma 3 multimodal (issue 15): the SigLIP tower and Gemma3MultiModalProjector read from the published
config.json, the image tokens the processor adds, the image side's terms (memory/vision.py _siglip_estimate), the
refusals, explain, and traced steps (trace/_vision.py builds Gemma3ForConditionalGeneration)."""

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


def gemma3(name: str = "gemma-3-4b-it") -> ModelSpec:
    path = HF / f"{name}.json"
    return spec_from_hf_config(json.loads(path.read_text()), name, str(path))


def test_published_config_fields() -> None:
    # google/gemma-3-4b-it's vision_config: SigLIP so400m at 896 px, 14 px patches, vision_use_head false;
    # Gemma3Config mm_tokens_per_image 256
    m = gemma3()
    assert m.family == "gemma3" and m.num_layers == 34
    assert m.vision == VisionSpec(kind="siglip", num_layers=27, hidden_size=1152, intermediate_size=4304,
                                  num_attention_heads=16, patch_size=14, image_size=896, feature_layer=-1,
                                  drop_cls=False, projector_act="none", projector_bias=False, mm_tokens_per_image=256)
    # the -vision preset is the same model
    p = presets.find_model("gemma-3-4b-it-vision")
    assert replace(p, name=m.name, display_name=m.display_name, source=m.source, aliases=m.aliases,
                   published_parameters=None, published_parameters_source=None) == m
    # the checkpoint's id names the whole model; the text preset gemma-3-4b keeps the language model alone
    assert presets.find_model("google/gemma-3-4b-it").name == "gemma-3-4b-it-vision"
    text = presets.find_model("gemma-3-4b")
    assert text.vision is None and count_params(text) == count_params(replace(m, vision=None))


def test_parts() -> None:
    # SigLIP: patch Conv2d with bias (3 x 14 x 14 x 1152 + 1152), 4,096 positions x 1152, 27 layers of
    # 4 x (1152^2 + 1152) + 2 x 2 x 1152 + 1152 x 4304 + 4304 + 4304 x 1152 + 1152, post_layernorm 2 x 1152;
    # the projector: 1152 x 2560 + the RMSNorm's 1152 (transformers builds the same: tests/test_hf_config.py)
    m = gemma3()
    assert m.vision is not None
    layer = 4 * (1152 * 1152 + 1152) + 4 * 1152 + 2 * 1152 * 4304 + 4304 + 1152
    assert vision_tower_params(m.vision) == 3 * 14 * 14 * 1152 + 1152 + 4096 * 1152 + 27 * layer + 2 * 1152
    assert projector_params(m.vision, 2560) == 1152 * 2560 + 1152 == 2_950_272


def test_image_tokens_and_the_processor_wrapping() -> None:
    # Gemma3Processor: "\n\n" <start_of_image> 256 x <image_soft_token> <end_of_image> "\n\n" per image
    m = gemma3()
    assert m.vision is not None
    assert vision.image_tokens(m.vision) == 256 and vision.wrap_tokens(m.vision) == 4
    t = TrainingSpec(method="lora", seq_len=512, images=2)
    assert vision.total_tokens(m, t) == 512 + 2 * 260
    text_model, text_run = vision.text_run(m, t)
    # the image blocks' 4-D masks under sdpa: the text model's run is counted as a masked (packed) batch
    assert text_run.seq_len == 1032 and text_run.packing == "packed" and text_model.vision is None
    assert vision.text_run(m, replace(t, attention="eager"))[1].packing == "none"
    b = estimate(m, t)
    assert b.details["activations.pixel_values"] == 2 * 3 * 896 * 896 * 2
    # the tower's last hidden state (4,096 x 1152 per image, bf16) lives as long as the model output
    assert b.details["activations.tower_output_kept"] == 2 * 4096 * 1152 * 2
    # no packing note: the notes name the image masks instead
    assert not any("packed rows" in n for n in b.notes)
    assert any("runs on 1,032 tokens per sample" in n for n in b.notes)


def test_lora_on_names_the_tower_lacks_adapts_the_language_model_only() -> None:
    # o_proj / down_proj: Gemma 3's text layers only (SigLIP has out_proj / fc2: peft leaves the tower alone;
    # q_proj / v_proj, the default, adapt the tower too: tests/test_siglip_lora.py)
    m = gemma3()
    t = TrainingSpec(method="lora", seq_len=256, lora_targets=("o_proj", "down_proj"))
    text_model, text_run = vision.text_run(m, t)
    b, text = estimate(m, t), estimate(text_model, text_run)
    assert b.trainable_parameters == text.trainable_parameters and b.gradients == text.gradients
    # without checkpointing the frozen tower and projector save nothing
    assert b.details["activations.image_side_saved"] == 0
    # with checkpointing (enable_input_require_grads hooks SigLIP's patch_embedding): 27 layer inputs, the
    # post_layernorm input, the avg-pool input, the patch Conv2d output leaf (30 x 4,096 x 1152 bf16) and 8 B of
    # LayerNorm stats per row, the RMSNorm's fp32 input (256 x 1152 x 4), the text embeddings' leaf
    # (516 x 2560 bf16) and masked_scatter's mask (516 B)
    ck = estimate(m, replace(t, grad_checkpointing=True))
    assert ck.details["activations.image_side_saved"] == (30 * 4096 * 1152 * 2 + 8 * 4096 + 256 * 1152 * 4
                                                          + 516 * 2560 * 2 + 516)
    assert "backward.vision" in [mo.key for mo in ck.named_moments()]


def test_train_vision_trains_the_tower() -> None:
    # --train-vision: every SigLIP parameter trains (the projector reads the last hidden state: all reach the loss)
    m = gemma3()
    assert m.vision is not None
    t = TrainingSpec(seq_len=512)
    frozen, trained = estimate(m, t), estimate(m, replace(t, train_vision=True))
    tower = vision_tower_params(m.vision)
    assert trained.trainable_parameters == frozen.trainable_parameters + tower
    per_param = frozen.gradients // frozen.trainable_parameters  # 2 B (bf16)
    assert trained.gradients - frozen.gradients == tower * per_param
    assert trained.tensor_peak_bytes > frozen.tensor_peak_bytes


def test_eager_counts_the_towers_scores() -> None:
    # siglip eager_attention_forward on 4,096 patches: the scaled scores (bf16), their fp32 cast and the fp32
    # softmax per head, 16 x 4,096^2 x 10 B per image, beside layer_norm1's output and q, k, v (4 x 1152 bf16 per
    # patch), replace sdpa's largest layer moment, the MLP's (layer_norm2's output 1152 + fc1's and the gelu's
    # 2 x 4304, bf16, per patch), for the frozen tower (o_proj: a name the tower lacks; test_siglip_lora.py has
    # the adapted one)
    m = gemma3()
    eager = estimate(m, TrainingSpec(method="lora", attention="eager", lora_targets=("o_proj",)))
    sdpa = estimate(m, TrainingSpec(method="lora", lora_targets=("o_proj",)))
    diff = eager.details["temporaries.vision_tower_forward"] - sdpa.details["temporaries.vision_tower_forward"]
    assert diff == 16 * 4096 * 4096 * 10 + 4096 * 4 * 1152 * 2 - 4096 * (1152 + 2 * 4304) * 2


@pytest.mark.parametrize(("kw", "error"), [
    ({"image_size": 448}, SpecError),
    ({"train_vision": True, "method": "lora"}, UnsupportedCombination),
    ({"train_vision": True, "attention": "eager"}, UnsupportedCombination),
    ({"mode": "inference"}, UnsupportedCombination),
    ({"packing": "packed"}, UnsupportedCombination),
    ({"attention": "flash"}, UnsupportedCombination),  # Gemma3ForConditionalGeneration._supports_flash_attn False
])
def test_refusals(kw: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        estimate(presets.find_model("gemma-3-4b-it-vision"), TrainingSpec(**kw))  # type: ignore[arg-type]


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["estimate", "gemma-3-4b-it-vision", "--image-size", "448"], capsys)
    assert code == 2 and err.count("\n") == 1 and "SigLIP tower takes 896 px" in err
    code, out, err = invoke(["estimate", "gemma-3-4b-it-vision", "--method", "lora", "--seq-len", "300",
                             "--images", "2", "--format", "json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    expected = estimate(presets.find_model("gemma-3-4b-it-vision"),
                        TrainingSpec(method="lora", seq_len=300, images=2))
    assert doc["tensor_peak_bytes"] == expected.tensor_peak_bytes
    assert any("runs on 820 tokens per sample" in n for n in doc["notes"])  # 300 + 2 x 260


@pytest.mark.parametrize("kw", [{}, {"method": "lora", "grad_checkpointing": True},
                                {"train_vision": True, "grad_checkpointing": True}],
                         ids=["full", "lora-gc", "train-vision-gc"])
def test_explain_adds_up(kw: dict[str, object]) -> None:
    from vramcalc.core.explain import explain

    m = presets.find_model("gemma-3-4b-it-vision")
    t = TrainingSpec(seq_len=256, **kw)  # type: ignore[arg-type]
    ex = explain(m, t)
    b = estimate(m, t)
    for sec in ex.sections:
        if sec.key in ("weights", "gradients", "optimizer_state", "activations"):
            assert sec.total == b.component(sec.key)
    vis = next(s for s in ex.sections if s.key == "vision")
    assert [x.value for x in vis.lines] == [256, 256 + 260]


# Gemma 3's proportions, small: a 4-layer language model (3 sliding, 1 global) and a 2-layer SigLIP tower at
# 224 px (16 x 16 patches pooled 2 x 2 to 64 image tokens), for traces of a few seconds
TINY = ModelSpec(name="tiny-gemma3-vision", source="tests/test_gemma3_vision.py", family="gemma3", vocab_size=2048,
                 hidden_size=256, intermediate_size=1024, num_layers=4, num_attention_heads=4, num_kv_heads=2,
                 head_dim=64, max_position_embeddings=4096, tie_word_embeddings=True, norms_per_layer=4, qk_norm=True,
                 sliding_window=512, sliding_window_layers=3, hidden_act="gelu_pytorch_tanh",
                 norm_fp32_weight_mul=True,
                 vision=VisionSpec(kind="siglip", num_layers=2, hidden_size=128, intermediate_size=448,
                                   num_attention_heads=4, patch_size=14, image_size=224, feature_layer=-1,
                                   drop_cls=False, projector_act="none", projector_bias=False,
                                   mm_tokens_per_image=64))


def test_tiny_count_matches_the_library() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace._hf import build_model

    hf, _ = build_model(TINY, TrainingSpec(), torch.bfloat16)
    assert type(hf).__name__ == "Gemma3ForConditionalGeneration"
    assert count_params(TINY) == sum(p.numel() for p in hf.parameters())


@pytest.mark.parametrize("kw", [{"method": "full"}, {"method": "lora", "grad_checkpointing": True},
                                {"method": "full", "train_vision": True}],
                         ids=["full", "lora-gc", "train-vision"])
def test_traced_step(kw: dict[str, object]) -> None:
    # Gemma3ForConditionalGeneration on fake tensors with token_type_ids (trace/_vision.py); measured: full
    # -0.06 %, LoRA with checkpointing -0.08 %, --train-vision -0.05 % (the published widths:
    # benchmarks/results/accuracy_vlm2.md); the bounds leave room for the text model's own error at other widths
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(seq_len=128, batch_size=2, **kw)  # type: ignore[arg-type]
    r, b = trace(TINY, t), estimate(TINY, t)
    assert r.trainable_parameters == b.trainable_parameters
    err = (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes
    assert -0.01 <= err <= 0.03


@pytest.mark.parametrize("model_type", ["idefics3", "smolvlm"])
def test_idefics3_is_refused_naming_what_is_missing(model_type: str, capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path) -> None:
    # Idefics3 / SmolVLM are read now (tests/test_idefics3.py); the library's bare defaults (224 px over 32 px
    # patches: 7 a side, scale_factor 2) are a model pixel_shuffle cannot run, refused in one line naming it
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, "text_config": {},
                                                      "vision_config": {}}))
    code, out, err = invoke(["estimate", str(tmp_path / "config.json")], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "pixel shuffle" in err
