"""LLaMA-Factory's vision-language freeze keys beyond --grid flm (io/runfiles.py _vlm_llama_factory;
hiyouga/LLaMA-Factory @ ff6d4d12 model_utils/visual.py get_forbidden_modules / patch_target_modules, model/adapter.py
_setup_freeze_tuning): freeze_language_model on Gemma 3, LLaVA-NeXT, Llama-3.2-Vision and Llama 4 (memory/frozen_lm.py,
memory/mllama.py, memory/llama4v.py; traced by --grid vlmfreeze), on the last two with the tower trained beside the
projector or alone,
and the combinations refused in one line: LoRA with the language model frozen, freeze tuning with the tower or the
projector trained beside the language model's layers."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import runfiles
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"
FLM = {"method": "freeze", "train_layers": (), "train_modules": ("projector",), "precision": "pure-bf16"}


def spec(config: str) -> ModelSpec:
    path = HF / f"{config}.json"
    return spec_from_hf_config(json.loads(path.read_text()), config, str(path))


def _load(tmp_path: Path, config: str, body: str) -> runfiles.Run:
    f = tmp_path / "lf.yaml"
    f.write_text(f"model_name_or_path: {HF / config}.json\nstage: sft\n{body}")
    return runfiles.load(str(f))[0]


@pytest.mark.parametrize("ftype", ["full", "freeze"])
def test_gemma3_freeze_language_model_trains_the_projector(tmp_path: Path, ftype: str) -> None:
    run = _load(tmp_path, "gemma-3-4b-it", f"finetuning_type: {ftype}\nfreeze_language_model: true\n"
                "freeze_multi_modal_projector: false\n")
    assert run.unmodelled == [] and {"freeze_language_model", "freeze_multi_modal_projector"} <= set(run.mapped)
    assert (run.options["method"], run.options["train_layers"], run.options["train_modules"]) == \
        ("freeze", "none", "projector")
    assert "train_vision" not in run.options
    run = _load(tmp_path, "gemma-3-4b-it", "finetuning_type: full\nfreeze_language_model: true\n"
                "freeze_multi_modal_projector: false\nfreeze_vision_tower: false\n")
    assert run.options["train_vision"] is True and run.options["train_modules"] == "projector"


def test_gemma3_frozen_language_model_holds_only_the_projector_trained() -> None:
    # gemma-3-4b-it's Gemma3MultiModalProjector (modeling_gemma3.py): mm_input_projection_weight 1,152 (SigLIP width)
    # x 2,560 (text width) and mm_soft_emb_norm's 1,152 weights; the 262,208-token tied embedding is not trained
    projector = 1152 * 2560 + 1152
    b = estimate(spec("gemma-3-4b-it"), TrainingSpec(**FLM, seq_len=256, images=1))
    assert b.trainable_parameters == projector == 2_950_272
    # pure-bf16: a 2-byte gradient and AdamW's two 2-byte moments per trained parameter
    assert (b.gradients, b.optimizer_state) == (2 * projector, 4 * projector)
    assert any("freeze_language_model" in n for n in b.notes)


def test_gemma3_frozen_language_model_against_the_tracer() -> None:
    # --grid vlmfreeze's first case: gemma-3-4b-it cut to 4 layers (both stacks, as --grid vlm2), projector
    # pure-bf16, b1 s512 one image, no checkpointing; the grid's bars: |error| <= 1 % (measured +0.06 %)
    from vramcalc.trace import trace

    m = spec("gemma-3-4b-it")
    m = replace(m, num_layers=4, sliding_window_layers=round(m.sliding_window_layers * 4 / m.num_layers),
                vision=replace(m.vision, num_layers=4))
    t = TrainingSpec(**FLM, batch_size=1, seq_len=512, images=1)
    got, ref = estimate(m, t), trace(m, t)
    assert abs(got.tensor_peak_bytes - ref.peak_bytes) / ref.peak_bytes <= 0.01
    assert got.peak_phase == ref.peak_phase


@pytest.mark.parametrize("config, extra, match", [
    # the tower frozen (the default): patch_target_modules drops the language model's and the tower's modules, and
    # `all` never names the projector's (find_all_linear_modules): peft finds no target
    ("llava-1.5-7b-hf", "", "no module"),
    ("qwen2-vl-2b-instruct", "freeze_multi_modal_projector: false\n", "no module"),
    # freeze_vision_tower false: the tower's Linears alone, no language-model adapter (not modelled)
    ("gemma-3-4b-it", "freeze_vision_tower: false\n", "vision tower's Linears alone"),
])
def test_lora_with_the_language_model_frozen_is_refused(tmp_path: Path, config: str, extra: str,
                                                        match: str) -> None:
    with pytest.raises(VramcalcError, match=match) as e:
        _load(tmp_path, config, f"finetuning_type: lora\nlora_target: all\nfreeze_language_model: true\n{extra}")
    assert "freeze_language_model" in str(e.value) and "finetuning_type full" in str(e.value)
    # Llama 4 (the llama-4-scout-vision preset: its config.json reads as the text model): the same refusal
    f = tmp_path / "l4.yaml"
    f.write_text("model_name_or_path: llama-4-scout-vision\nstage: sft\nfinetuning_type: lora\n"
                 "freeze_language_model: true\n")
    with pytest.raises(VramcalcError, match="finetuning_type full"):
        runfiles.load(str(f))


@pytest.mark.parametrize("key, match", [("freeze_vision_tower", "tower's blocks"),
                                        ("freeze_multi_modal_projector", "the projector")])
def test_freeze_tuning_with_the_image_side_trained_is_refused(tmp_path: Path, key: str, match: str) -> None:
    # _setup_freeze_tuning: the `.{idx}.` names of the language model's trainable layer ids (the tower's blocks with
    # those indices too) and the projector_keys, beside the language model's layers
    with pytest.raises(VramcalcError, match=match) as e:
        _load(tmp_path, "qwen2-vl-2b-instruct", f"finetuning_type: freeze\n{key}: false\n")
    assert str(e.value).count("\n") == 0 and "finetuning_type full" in str(e.value)


def test_llava_next_frozen_language_model_trains_the_projector_and_newline(tmp_path: Path) -> None:
    run = _load(tmp_path, "llava-v1.6-mistral-7b-hf", "finetuning_type: full\nfreeze_language_model: true\n"
                "freeze_multi_modal_projector: false\n")
    assert run.unmodelled == [] and run.options["train_modules"] == "projector"
    # llava-v1.6-mistral-7b-hf's LlavaNextMultiModalProjector (modeling_llava_next.py): linear_1 1,024 (CLIP
    # ViT-L/14) -> 4,096, GELU, linear_2 4,096 -> 4,096, both biased, and LlavaNextModel.image_newline (4,096):
    # get_forbidden_modules names neither, so both train
    trained = 1024 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096
    b = estimate(spec("llava-v1.6-mistral-7b-hf"), TrainingSpec(**FLM, seq_len=256, images=1, image_size=672))
    assert b.trainable_parameters == trained == 20_983_808
    assert (b.gradients, b.optimizer_state) == (2 * trained, 4 * trained)


def test_llava_next_frozen_language_model_against_the_tracer() -> None:
    # --grid vlmfreeze's LLaVA-NeXT case: llava-v1.6-mistral-7b-hf cut to 2 text layers and a 2-layer tower (as
    # --grid vlm3), projector pure-bf16, one 672 px image (5 tiles), checkpointing on; bars |error| <= 1 % (measured
    # -0.00 %)
    from vramcalc.trace import trace

    m = spec("llava-v1.6-mistral-7b-hf")
    assert m.vision is not None
    m = replace(m, num_layers=2, vision=replace(m.vision, num_layers=2))
    t = TrainingSpec(**FLM, batch_size=1, seq_len=256, images=1, image_size=672, grad_checkpointing=True)
    got, ref = estimate(m, t), trace(m, t)
    assert abs(got.tensor_peak_bytes - ref.peak_bytes) / ref.peak_bytes <= 0.01
    assert got.peak_phase == ref.peak_phase


def test_mllama_frozen_language_model_trains_the_projector_alone(tmp_path: Path) -> None:
    # COMPOSITE_MODELS["mllama"] (model_utils/visual.py): vision_model_keys ["vision_model"], the default
    # language_model_keys ["language_model", "lm_head"]: MllamaTextModel's cross-attention layers (their q/k_norm and
    # gates) are under language_model, so frozen with it; multi_modal_projector trains
    run = _load(tmp_path, "llama-3.2-11b-vision-instruct", "finetuning_type: full\nfreeze_language_model: true\n"
                "freeze_multi_modal_projector: false\n")
    assert run.unmodelled == [] and (run.options["method"], run.options["train_modules"]) == ("freeze", "projector")
    # Llama-3.2-11B-Vision's MllamaForConditionalGeneration.multi_modal_projector: nn.Linear(vision_output_dim 7,680
    # (1,280 x the global output and 5 intermediate layers), text hidden 4,096, bias=True)
    projector = 7680 * 4096 + 4096
    b = estimate(spec("llama-3.2-11b-vision-instruct"), TrainingSpec(**FLM, seq_len=256, images=1))
    assert b.trainable_parameters == projector == 31_461_376
    # pure-bf16: a 2-byte gradient and AdamW's two 2-byte moments per trained parameter
    assert (b.gradients, b.optimizer_state) == (2 * projector, 4 * projector)
    assert any("freeze_language_model" in n for n in b.notes)


def test_mllama_frozen_language_model_saves_nothing_below_the_lowest_cross_attention_layer() -> None:
    # without checkpointing the image enters at the cross-attention layers only (3 and 8 in the 11B): the three
    # layers below record no graph, so 9 layers save less than the 9 layers of a run whose input needs a gradient;
    # with checkpointing the hooked text embeddings make every layer keep its input (the same either way)
    m = spec("llama-3.2-11b-vision-instruct")
    assert m.vision is not None and min(m.vision.cross_attention_layers) == 3
    t = TrainingSpec(**FLM, seq_len=512, images=1)
    cut = replace(m, num_layers=9, vision=replace(m.vision, cross_attention_layers=(3, 8)))
    raised = replace(cut, vision=replace(cut.vision, cross_attention_layers=(0, 8)))
    lowered = estimate(cut, t).phases["forward"], estimate(raised, t).phases["forward"]
    assert lowered[0] < lowered[1]
    gc = replace(t, grad_checkpointing=True)
    assert estimate(cut, gc).phases["forward"] == estimate(raised, gc).phases["forward"]


def test_mllama_frozen_language_model_against_the_tracer() -> None:
    # --grid vlmfreeze's Llama-3.2-Vision toy case (--grid mllama's toy: 4 text layers of width 256, cross-attention
    # at 1 and 3, the 4 + 1 layer tower, intermediate outputs 1 and 3), projector pure-bf16, b1 16 text tokens two
    # images, no checkpointing; bars |error| <= 1 % (measured -0.00 %)
    from vramcalc.trace import trace

    m, t = _mllama_toy(), TrainingSpec(**FLM, batch_size=1, seq_len=16, images=2)
    got, ref = estimate(m, t), trace(m, t)
    assert abs(got.tensor_peak_bytes - ref.peak_bytes) / ref.peak_bytes <= 0.01
    assert got.peak_phase == ref.peak_phase


def _mllama_toy() -> ModelSpec:
    """--grid mllama's toy: 4 text layers of width 256, cross-attention at 1 and 3, the published tower cut to 4 + 1
    layers, intermediate outputs 1 and 3."""
    m = spec("llama-3.2-11b-vision-instruct")
    assert m.vision is not None
    v = replace(m.vision, num_layers=4, num_global_layers=1, intermediate_layers_indices=(1, 3),
                vision_output_dim=m.vision.hidden_size * 3, cross_attention_layers=(1, 3))
    return replace(m, num_layers=4, hidden_size=256, intermediate_size=512, num_attention_heads=4, num_kv_heads=2,
                   vocab_size=1000, vision=v)


def test_mllama_frozen_language_model_refusals(tmp_path: Path) -> None:
    # LoRA with the language model frozen: no target (refused, the fix is full tuning now that it is modelled)
    with pytest.raises(VramcalcError, match="finetuning_type full"):
        _load(tmp_path, "llama-3.2-11b-vision-instruct", "finetuning_type: lora\nfreeze_language_model: true\n")
    # the projector and the tower frozen too: nothing trained
    with pytest.raises(VramcalcError, match="trains nothing: set freeze_multi_modal_projector: false") as e:
        _load(tmp_path, "llama-3.2-11b-vision-instruct", "finetuning_type: full\nfreeze_language_model: true\n")
    assert str(e.value).count("\n") == 0
    # freeze tuning with the tower trained: its blocks by the language model's layer ids (_setup_freeze_tuning)
    with pytest.raises(VramcalcError, match="use finetuning_type full"):
        _load(tmp_path, "llama-3.2-11b-vision-instruct", "finetuning_type: freeze\nfreeze_language_model: true\n"
              "freeze_multi_modal_projector: false\nfreeze_vision_tower: false\n")


# Llama-3.2-11B-Vision's MllamaVisionModel (config.json vision_config: hidden 1,280, intermediate 5,120, 32 local
# and 8 gated global layers, 14 px patches of 560 px tiles: 1,600 patches + a class token, 4 tiles, 8 aspect ratios;
# modeling_mllama.py): the patch Conv2d 3 x 14 x 14 x 1,280 (no bias); the class embedding 1,280; the gated position
# embedding (gate 1, 1,601 x 1,280, tile embedding 9 x 4 x 1,601 x 1,280); the gated pre / post tile embeddings
# (9 x 4 x 1,280 + a gate each); layernorm_pre / post (2 x 1,280 each); per layer q/k/v/o 4 x 1,280^2 (no bias),
# fc1 1,280 x 5,120 + 5,120, fc2 5,120 x 1,280 + 1,280 and two LayerNorms 4 x 1,280; the global layers 2 gates more
MLLAMA_LAYER = 4 * 1280 * 1280 + (1280 * 5120 + 5120) + (5120 * 1280 + 1280) + 4 * 1280
MLLAMA_TOWER = (3 * 14 * 14 * 1280 + 1280 + (1 + 1601 * 1280 + 9 * 4 * 1601 * 1280) + 2 * (9 * 4 * 1280 + 1)
                + 2 * 2 * 1280 + 32 * MLLAMA_LAYER + 8 * (MLLAMA_LAYER + 2))
MLLAMA_PROJECTOR = 7680 * 4096 + 4096  # test_mllama_frozen_language_model_trains_the_projector_alone


@pytest.mark.parametrize("projector_frozen", [False, True])
def test_mllama_frozen_language_model_with_the_tower_trained(tmp_path: Path, projector_frozen: bool) -> None:
    # freeze_vision_tower false: get_forbidden_modules leaves vision_model out, _setup_full_tuning trains it beside
    # the projector (freeze_multi_modal_projector false) or alone (true: multi_modal_projector forbidden too)
    run = _load(tmp_path, "llama-3.2-11b-vision-instruct", "finetuning_type: full\nfreeze_language_model: true\n"
                f"freeze_vision_tower: false\nfreeze_multi_modal_projector: {str(projector_frozen).lower()}\n")
    assert run.unmodelled == [] and run.options["train_vision"] is True
    assert (run.options["method"], run.options["train_layers"], run.options["train_modules"]) == \
        ("freeze", "none", "none" if projector_frozen else "projector")
    trained = MLLAMA_TOWER + (0 if projector_frozen else MLLAMA_PROJECTOR)
    kw = {**FLM, "train_modules": () if projector_frozen else ("projector",)}
    b = estimate(spec("llama-3.2-11b-vision-instruct"), TrainingSpec(**kw, train_vision=True, seq_len=256, images=1))
    assert MLLAMA_TOWER == 863_567_379
    assert b.trainable_parameters == trained
    assert (b.gradients, b.optimizer_state) == (2 * trained, 4 * trained)  # pure-bf16, as above
    assert any(("the language model and the projector frozen" if projector_frozen else "freeze_language_model")
               in n for n in b.notes)


def test_mllama_tower_alone_against_the_tracer() -> None:
    # --grid vlmfreeze's Llama-3.2-Vision toy, the tower alone trained (the projector frozen too), b2 32 text tokens
    # one image, checkpointing on; bars |error| <= 1 % (measured +0.47 %, as --grid mllama's full --train-vision toy)
    from vramcalc.trace import trace

    m = _mllama_toy()
    t = TrainingSpec(**{**FLM, "train_modules": ()}, train_vision=True, batch_size=2, seq_len=32, images=1,
                     grad_checkpointing=True)
    got, ref = estimate(m, t), trace(m, t)
    assert abs(got.tensor_peak_bytes - ref.peak_bytes) / ref.peak_bytes <= 0.01
    assert got.peak_phase == ref.peak_phase
    assert got.trainable_parameters == ref.trainable_parameters


def test_tower_alone_is_refused_outside_llama_32_vision_and_llama4(tmp_path: Path) -> None:
    # the other families' estimators count the projector trained under a frozen language model: refused in one line
    with pytest.raises(VramcalcError, match="tower alone: modelled for Llama-3.2-Vision and Llama 4") as e:
        _load(tmp_path, "gemma-3-4b-it", "finetuning_type: full\nfreeze_language_model: true\n"
              "freeze_vision_tower: false\n")
    assert str(e.value).count("\n") == 0 and "freeze_multi_modal_projector: false" in str(e.value)
    with pytest.raises(VramcalcError, match="add --train-modules projector"):
        estimate(spec("gemma-3-4b-it"), TrainingSpec(**{**FLM, "train_modules": ()}, train_vision=True))


def test_mllama_frozen_language_model_explain_adds_up() -> None:
    # explain's sections hold the core's totals: the projector's 31,461,376 parameters' 2-byte gradients (above)
    from vramcalc.core.explain import explain

    m = spec("llama-3.2-11b-vision-instruct")
    e = explain(m, TrainingSpec(**FLM, seq_len=512, images=1))
    grads = next(sec for sec in e.sections if sec.key == "gradients")
    assert grads.total == sum(x.value for x in grads.lines) == 2 * 31_461_376
    assert e.breakdown == estimate(m, TrainingSpec(**FLM, seq_len=512, images=1))


def test_llama4_frozen_language_model_trains_the_projector_alone(tmp_path: Path) -> None:
    # COMPOSITE_MODELS["llama4"] (model_utils/visual.py): vision_model_keys ["vision_model"] (Llama4VisionModel, its
    # pixel-shuffle vision_adapter inside), the default language_model / lm_head keys; multi_modal_projector trains
    from vramcalc.io import presets

    f = tmp_path / "l4.yaml"
    f.write_text("model_name_or_path: llama-4-scout-vision\nstage: sft\nfinetuning_type: freeze\n"
                 "freeze_language_model: true\nfreeze_multi_modal_projector: false\n")
    run = runfiles.load(str(f))[0]
    assert run.unmodelled == [] and (run.options["method"], run.options["train_modules"]) == ("freeze", "projector")
    # Llama4MultiModalProjector (modeling_llama4.py): one nn.Linear(vision_output_dim 4,096, text hidden 5,120,
    # bias=False)
    projector = 4096 * 5120
    b = estimate(presets.find_model("llama-4-scout-vision"), TrainingSpec(**FLM, seq_len=256, images=1))
    assert b.trainable_parameters == projector == 20_971_520
    assert (b.gradients, b.optimizer_state) == (2 * projector, 4 * projector)
    assert any("freeze_language_model" in n for n in b.notes)
    # with checkpointing the output says the recomputed layer's set is an approximation (an over-estimate)
    gc = estimate(presets.find_model("llama-4-scout-vision"),
                  TrainingSpec(**FLM, seq_len=256, images=1, grad_checkpointing=True))
    assert any("approximate: with checkpointing" in n for n in gc.notes)


def test_llama4_frozen_language_model_against_the_tracer() -> None:
    # --grid vlmfreeze's first Llama 4 case: the published tower cut to 2 layers on Scout's toy language model (as
    # --grid llama4v's tiny-lm; tests/test_llama4v.py _toy), projector pure-bf16, b1 128 text tokens one tile, no
    # checkpointing; bars |error| <= 1 % (measured -0.01 %)
    from vramcalc.trace import trace

    m, t = _llama4_toy(), TrainingSpec(**FLM, batch_size=1, seq_len=128, images=1)
    got, ref = estimate(m, t), trace(m, t)
    assert abs(got.tensor_peak_bytes - ref.peak_bytes) / ref.peak_bytes <= 0.01
    assert got.peak_phase == ref.peak_phase


def _llama4_toy() -> ModelSpec:
    """--grid llama4v's Scout tiny-lm: the published tower cut to 2 layers on a toy MoE language model
    (tests/test_llama4v.py _toy)."""
    from vramcalc.io import presets

    m = presets.find_model("llama-4-scout-vision")
    assert m.vision is not None
    return replace(m, num_layers=4, hidden_size=256, intermediate_size=384, moe_intermediate_size=192,
                   shared_expert_intermediate_size=192, num_experts=4, num_attention_heads=4, num_kv_heads=1,
                   head_dim=64, vocab_size=1024, attention_chunk_size=128, max_position_embeddings=4096,
                   vision=replace(m.vision, num_layers=2))


# Llama-4-Scout's Llama4VisionModel (config.json vision_config: hidden 1,408, intermediate 5,632, 34 layers, 14 px
# patches of 336 px tiles: 576 patches + a class token, pixel_shuffle_ratio 0.5, projector_input_dim /
# projector_output_dim 4,096; modeling_llama4.py): Llama4UnfoldConvolution's Linear 3 x 14 x 14 -> 1,408 (no bias),
# the class embedding 1,408, the positions 577 x 1,408, layernorm_pre / post (2 x 1,408 each); per layer q/k/v/o
# 4 x (1,408^2 + 1,408), fc1 1,408 x 5,632 + 5,632, fc2 5,632 x 1,408 + 1,408 and two LayerNorms 4 x 1,408; the
# pixel-shuffle adapter's MLP (vision_adapter, inside vision_model: trained with it) fc1 5,632 (1,408 / 0.5^2) ->
# 4,096 and fc2 4,096 -> 4,096, no bias
LLAMA4_LAYER = 4 * (1408 * 1408 + 1408) + (1408 * 5632 + 5632) + (5632 * 1408 + 1408) + 4 * 1408
LLAMA4_TOWER = 3 * 14 * 14 * 1408 + 1408 + 577 * 1408 + 2 * 2 * 1408 + 34 * LLAMA4_LAYER + 5632 * 4096 + 4096 * 4096
LLAMA4_PROJECTOR = 4096 * 5120  # test_llama4_frozen_language_model_trains_the_projector_alone


@pytest.mark.parametrize("projector_frozen", [False, True])
def test_llama4_frozen_language_model_with_the_tower_trained(tmp_path: Path, projector_frozen: bool) -> None:
    # freeze_vision_tower false: vision_model (its pixel-shuffle adapter inside) trains beside the projector or alone
    from vramcalc.io import presets

    f = tmp_path / "l4.yaml"
    f.write_text("model_name_or_path: llama-4-scout-vision\nstage: sft\nfinetuning_type: full\n"
                 "freeze_language_model: true\nfreeze_vision_tower: false\n"
                 f"freeze_multi_modal_projector: {str(projector_frozen).lower()}\n")
    run = runfiles.load(str(f))[0]
    assert run.unmodelled == [] and run.options["train_vision"] is True
    assert run.options["train_modules"] == ("none" if projector_frozen else "projector")
    trained = LLAMA4_TOWER + (0 if projector_frozen else LLAMA4_PROJECTOR)
    kw = {**FLM, "train_modules": () if projector_frozen else ("projector",)}
    b = estimate(presets.find_model("llama-4-scout-vision"),
                 TrainingSpec(**kw, train_vision=True, seq_len=256, images=1))
    assert LLAMA4_TOWER == 850_960_896
    assert b.trainable_parameters == trained
    assert (b.gradients, b.optimizer_state) == (2 * trained, 4 * trained)  # pure-bf16, as above


def test_llama4_frozen_projector_saves_no_input() -> None:
    # the projector frozen (the tower alone trained): its Linear saves no input for a weight gradient, the adapter's
    # output for one tile's 144 pixel-shuffled rows x vision_output_dim 4,096, 2-byte (memory/llama4v.py
    # saved_projector)
    from vramcalc.io import presets

    m = presets.find_model("llama-4-scout-vision")
    side = [estimate(m, TrainingSpec(**{**FLM, "train_modules": mods}, train_vision=True, seq_len=256, images=1))
            .details["activations.image_side_saved"] for mods in (("projector",), ())]
    assert side[0] - side[1] == 144 * 4096 * 2


def test_llama4_tower_alone_against_the_tracer() -> None:
    # --grid vlmfreeze's Llama 4 Scout tiny-lm, the tower alone trained, b2 64 text tokens, one 300 x 800 image (4
    # tiles and a global one), no checkpointing; bars |error| <= 1 % (measured +0.29 %)
    from vramcalc.trace import trace

    m = _llama4_toy()
    t = TrainingSpec(**{**FLM, "train_modules": ()}, train_vision=True, batch_size=2, seq_len=64, images=1,
                     image_size=300, image_width=800)
    got, ref = estimate(m, t), trace(m, t)
    assert abs(got.tensor_peak_bytes - ref.peak_bytes) / ref.peak_bytes <= 0.01
    assert got.peak_phase == ref.peak_phase
    assert got.trainable_parameters == ref.trainable_parameters


def test_llama4_frozen_stack_counts_dense_layers_as_dense() -> None:
    # the stand-in text run (only the embedding trained, every layer frozen with its input needing a gradient) on
    # Maverick's interleaved layers: its dense layers save a frozen dense MLP's set, below a MoE layer's (memory/
    # __init__.py; --grid vlmfreeze Maverick 4 layers no-gc was +4.67 % counting them as MoE layers, -0.73 % now)
    from vramcalc.io import presets

    m = presets.find_model("llama-4-maverick-vision")
    t = TrainingSpec(**FLM, seq_len=128, images=1)
    moe_only = replace(m, moe_layer_interval=1, first_dense_layers=0)
    assert estimate(m, t).activations < estimate(moe_only, t).activations


@pytest.mark.parametrize("family", ["mllama", "llama4"])
def test_tower_alone_explain_adds_up(family: str) -> None:
    # explain's gradient section holds the tower's 2-byte gradients alone (the projector frozen: no line for it), and
    # its Breakdown is the core's
    from vramcalc.core.explain import explain
    from vramcalc.io import presets

    m = spec("llama-3.2-11b-vision-instruct") if family == "mllama" else presets.find_model("llama-4-scout-vision")
    t = TrainingSpec(**{**FLM, "train_modules": ()}, train_vision=True, seq_len=512, images=1)
    e = explain(m, t)
    grads = next(sec for sec in e.sections if sec.key == "gradients")
    tower = MLLAMA_TOWER if family == "mllama" else LLAMA4_TOWER
    assert grads.total == sum(x.value for x in grads.lines) == 2 * tower
    assert all("projector" not in x.label or "projector frozen" in x.label for x in grads.lines)
    assert e.breakdown == estimate(m, t)
