"""The language model frozen, the projector (and tower) trained: --method freeze --train-layers none --train-modules
projector (memory/vision.py frozen_lm), LLaMA-Factory's freeze_language_model (hiyouga/LLaMA-Factory @ ff6d4d12
model_utils/visual.py get_forbidden_modules). Traced by --grid flm (benchmarks/results/accuracy_flm.md)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.specs import ModelSpec, TrainingSpec

HF = Path(__file__).parent / "data" / "hf"
FLM = {"method": "freeze", "train_layers": (), "train_modules": ("projector",), "precision": "pure-bf16",
       "seq_len": 256, "images": 1}


def spec(config: str) -> ModelSpec:
    from vramcalc.io.hf_config import spec_from_hf_config

    path = HF / f"{config}.json"
    return spec_from_hf_config(json.loads(path.read_text()), config, str(path))


def test_only_the_projector_holds_gradients_and_states() -> None:
    # llava-1.5-7b-hf's LlavaMultiModalProjector (modeling_llava.py): linear_1 1,024 (CLIP ViT-L/14) -> 4,096, GELU,
    # linear_2 4,096 -> 4,096, both biased
    projector = 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    b = estimate(spec("llava-1.5-7b-hf"), TrainingSpec(**FLM))
    assert b.trainable_parameters == projector == 20_979_712
    # pure-bf16: a 2-byte gradient and AdamW's two 2-byte moments per trained parameter
    assert (b.gradients, b.optimizer_state) == (2 * projector, 4 * projector)
    # qwen2-vl-2b-instruct's merger (modeling_qwen2_vl.py PatchMerger): ln_q LayerNorm(1,280) with bias, mlp Linear
    # 4 x 1,280 -> 5,120, GELU, Linear 5,120 -> 1,536 (the text width), both biased
    merger = 2 * 1280 + 5120 * 5120 + 5120 + 5120 * 1536 + 1536
    assert estimate(spec("qwen2-vl-2b-instruct"), TrainingSpec(**FLM, image_size=448)).trainable_parameters == merger


@pytest.mark.parametrize("config, extra", [("llava-1.5-7b-hf", {}), ("qwen2-vl-2b-instruct", {"image_size": 448})])
def test_the_tower_trains_beside_the_projector(config: str, extra: dict[str, int]) -> None:
    m = spec(config)
    flm = estimate(m, TrainingSpec(**FLM, **extra)).trainable_parameters
    full = estimate(m, TrainingSpec(**{**FLM, "method": "full", "train_layers": None, "train_modules": None},
                                    **extra))
    full_tower = estimate(m, TrainingSpec(**{**FLM, "method": "full", "train_layers": None, "train_modules": None},
                                          **extra, train_vision=True))
    tower = full_tower.trainable_parameters - full.trainable_parameters  # what --train-vision adds under full
    assert estimate(m, TrainingSpec(**FLM, **extra, train_vision=True)).trainable_parameters == flm + tower
    # the same weights as full fine-tuning, no language-model gradients or states: a lower peak
    b = estimate(m, TrainingSpec(**FLM, **extra))
    assert b.weights == full.weights and b.peak_bytes < full.peak_bytes


def test_every_layer_saves_for_the_image_tokens_gradient() -> None:
    # the projector's gradient flows back through every frozen layer (masked_scatter's inputs_embeds needs one):
    # each layer saves what its input's gradient needs, less than full fine-tuning's trained layers
    m = spec("llava-1.5-7b-hf")
    flm = estimate(m, TrainingSpec(**FLM)).activations
    full = estimate(m, TrainingSpec(**{**FLM, "method": "full", "train_layers": None, "train_modules": None}))
    assert 0 < flm < full.activations


def test_checkpointing_hooks_the_frozen_tower() -> None:
    # enable_input_require_grads (modeling_utils.py) hooks the frozen text embedding and the CLIP tower's patch
    # embedding: the tower's 24 checkpointed layers keep their inputs and its embeddings' LayerNorm its input (25 x 577
    # rows x 1,024 per image), the projector's GELU its input (576 x 4,096) and the text embeddings' output (256 text
    # + 576 image tokens x 4,096), 2-byte (memory/vision.py tower_kept; --grid flm's gc cases)
    m = spec("llava-1.5-7b-hf")
    side = [estimate(m, TrainingSpec(**FLM, grad_checkpointing=gc)).details["activations.image_side_saved"]
            for gc in (False, True)]
    assert side[1] - side[0] == (25 * 577 * 1024 + 576 * 4096 + (256 + 576) * 4096) * 2 == 41_076_736


@pytest.mark.parametrize("config, kw, match", [
    # the tower alone trained (the projector frozen too): Llama-3.2-Vision and Llama 4 only (--grid vlmfreeze)
    ("llava-1.5-7b-hf", {"train_vision": True, "train_modules": ()}, "add --train-modules projector"),
    ("smolvlm-256m-instruct", {}, "LLaVA-1.5, LLaVA-NeXT"),
    ("llava-1.5-7b-hf", {"train_layers": (0,)}, "--train-layers none"),
    ("llava-1.5-7b-hf", {"train_modules": ("projector", "lm_head")}, "--train-layers none"),
    ("llava-1.5-7b-hf", {"precision": "amp-bf16"}, "autocast"),
])
def test_what_is_not_modelled_is_refused(config: str, kw: dict[str, object], match: str) -> None:
    from vramcalc.io.resolve import resolve_model

    m = resolve_model(config, Path("."))[0] if config.endswith("-vision") else spec(config)  # a preset: Llama 4's
    with pytest.raises(UnsupportedCombination, match=match):
        estimate(m, TrainingSpec(**{**FLM, **kw}))


def test_a_text_model_has_no_projector() -> None:
    with pytest.raises(UnsupportedCombination, match="reads text only"):
        estimate(replace(spec("llava-1.5-7b-hf"), vision=None), TrainingSpec(**{**FLM, "images": 0}))


def test_explain_counts_the_image_side_alone() -> None:
    # the explanation's language-model sections hold no trainable parameter, gradient or state (its stand-in
    # embedding taken out), the image side's lines all of them
    from vramcalc.core.explain import explain

    m = spec("llava-1.5-7b-hf")
    t = TrainingSpec(**FLM, train_vision=True)
    e = explain(m, t)
    lines = e.lines()
    assert lines["parameters.trainable"].value == 0
    assert lines["gradients.projector"].value == e.breakdown.gradients > 0
    assert lines["optimizer_state.projector"].value == e.breakdown.optimizer_state > 0
    assert lines["gradients.total"].value == e.breakdown.gradients
