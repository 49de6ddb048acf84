"""LoRA on a vision-language model's language model only (--lora-targets ...,lm-only; core/params.py LM_ONLY) and
LLaMA-Factory's vision-language keys (io/runfiles.py _vlm_llama_factory: freeze_vision_tower,
freeze_multi_modal_projector, freeze_language_model, image_max_pixels / image_min_pixels; hiyouga/LLaMA-Factory @
ff6d4d12 model_utils/misc.py find_all_linear_modules, model_utils/visual.py patch_target_modules and
COMPOSITE_MODELS). The step against the tracer: benchmarks/accuracy.py --grid vlmlf."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from vramcalc.core.errors import UnsupportedCombination, VramcalcError
from vramcalc.core.memory import estimate
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import runfiles
from vramcalc.io.hf_config import spec_from_hf_config

HF = Path(__file__).parent / "data" / "hf"


def spec(config: str) -> ModelSpec:
    path = HF / f"{config}.json"
    return spec_from_hf_config(json.loads(path.read_text()), config, str(path))


def lora(m: ModelSpec, *targets: str) -> int:
    return estimate(m, TrainingSpec(method="lora", seq_len=64, lora_targets=targets)).trainable_parameters


def test_lm_only_adapts_the_language_model_alone() -> None:
    r = 16  # --lora-rank's default; each adapted Linear holds r x (in + out) (lora_A and lora_B)
    # llava-1.5-7b-hf's Llama: 32 layers, hidden 4,096, MLP 11,008, 32 kv heads: q/k/v/o 4,096 -> 4,096, gate/up
    # 4,096 -> 11,008, down back
    llava = spec("llava-1.5-7b-hf")
    h, i = 4096, 11008
    assert lora(llava, "q_proj", "v_proj", "lm-only") == 32 * r * 2 * (h + h) == 8_388_608
    assert lora(llava, "all-linear", "lm-only") == 32 * r * (4 * (h + h) + 2 * (h + i) + (i + h)) == 39_976_960
    # without lm-only peft's suffix match reaches the CLIP tower's q_proj / v_proj too (24 layers of width 1,024)
    assert lora(llava, "q_proj", "v_proj") == 8_388_608 + 24 * r * 2 * (1024 + 1024)
    # qwen2-vl-2b-instruct's Qwen2: 28 layers, hidden 1,536, MLP 8,960, 2 kv heads of 128 (k, v: 1,536 -> 256)
    qwen = spec("qwen2-vl-2b-instruct")
    h, i, kv = 1536, 8960, 256
    assert lora(qwen, "all-linear", "lm-only") == 28 * r * (2 * (h + h) + 2 * (h + kv) + 2 * (h + i) + (i + h))
    assert lora(qwen, "all-linear") > lora(qwen, "all-linear", "lm-only")  # the tower's qkv / proj / fc1 / fc2, merger
    # every family vramcalc reads: lm-only is the same adapters as the language model's own (no tower, no projector)
    for config in ("smolvlm-256m-instruct", "qwen2.5-vl-3b-instruct", "llava-v1.6-mistral-7b-hf"):
        m = spec(config)
        assert lora(m, "all-linear", "lm-only") < lora(m, "all-linear"), config
        assert lora(m, "q_proj", "v_proj", "lm-only") == lora(replace(m, vision=None), "q_proj", "v_proj"), config


def test_lm_only_on_a_text_model_changes_nothing_and_alone_names_nothing() -> None:
    m = spec("llava-1.5-7b-hf")
    text = replace(m, vision=None)
    plain = estimate(text, TrainingSpec(method="lora", seq_len=64, lora_targets=("all-linear",)))
    marked = estimate(text, TrainingSpec(method="lora", seq_len=64, lora_targets=("all-linear", "lm-only")))
    assert plain == marked
    with pytest.raises(UnsupportedCombination, match="names no module"):
        estimate(m, TrainingSpec(method="lora", seq_len=64, lora_targets=("lm-only",)))


def _load(tmp_path: Path, config: str, body: str) -> runfiles.Run:
    f = tmp_path / "lf.yaml"
    f.write_text(f"model_name_or_path: {HF / config}.json\nstage: sft\n{body}")
    return runfiles.load(str(f))[0]


def test_llama_factory_keeps_lora_off_a_registered_tower(tmp_path: Path) -> None:
    # COMPOSITE_MODELS registers qwen2_vl / llava: the tower frozen by default, LoRA on the language model only
    run = _load(tmp_path, "qwen2-vl-2b-instruct", "finetuning_type: lora\nlora_target: all\n")
    assert run.options["lora_targets"] == "all-linear,lm-only" and run.unmodelled == []
    run = _load(tmp_path, "llava-1.5-7b-hf", "finetuning_type: lora\nlora_target: q_proj,v_proj\n"
                "freeze_vision_tower: true\nfreeze_multi_modal_projector: false\n")
    assert run.options["lora_targets"] == "q_proj,v_proj,lm-only"
    assert {"freeze_vision_tower", "freeze_multi_modal_projector"} <= set(run.mapped) and run.unmodelled == []
    # the tower trained: peft's own match (the tower's q_proj / v_proj too), no lm-only
    run = _load(tmp_path, "llava-1.5-7b-hf", "finetuning_type: lora\nlora_target: all\nfreeze_vision_tower: false\n")
    assert run.options["lora_targets"] == "all-linear" and "freeze_vision_tower" in run.mapped
    assert any("keeps LoRA off the projector" in n for n in run.notes)


def test_llama_factory_leaves_idefics3_whole(tmp_path: Path) -> None:
    # idefics3 is not in COMPOSITE_MODELS: LoRA all reaches the tower and connector, full tuning trains the tower
    run = _load(tmp_path, "smolvlm-256m-instruct", "finetuning_type: lora\nlora_target: all\n"
                "freeze_language_model: true\n")
    assert run.options["lora_targets"] == "all-linear" and "freeze_language_model" in run.mapped
    run = _load(tmp_path, "smolvlm-256m-instruct", "finetuning_type: full\n")
    assert run.options["train_vision"] is True


def test_llama_factory_full_tuning_and_the_frozen_parts(tmp_path: Path) -> None:
    run = _load(tmp_path, "llava-1.5-7b-hf", "finetuning_type: full\nfreeze_vision_tower: false\n")
    assert run.options["train_vision"] is True and run.unmodelled == []
    assert any("projector is frozen in full tuning" in n for n in run.notes)  # the default projector freeze
    # freeze_language_model with the projector frozen too (its default) trains nothing (or the tower alone): refused
    with pytest.raises(VramcalcError, match="freeze_multi_modal_projector: false"):
        _load(tmp_path, "llava-1.5-7b-hf", "finetuning_type: full\nfreeze_language_model: true\n")
    # freeze tuning with the tower trained beside the language model's layers: refused (tests/test_vlm_freeze_keys.py)
    with pytest.raises(VramcalcError, match="freeze_vision_tower"):
        _load(tmp_path, "llava-1.5-7b-hf", "finetuning_type: freeze\nfreeze_vision_tower: false\n")


def test_llama_factory_image_pixels(tmp_path: Path) -> None:
    # Qwen2-VL: the budget's largest square (isqrt(262,144) = 512 px) as --image-size
    run = _load(tmp_path, "qwen2-vl-2b-instruct", "finetuning_type: lora\nimage_max_pixels: 262144\n")
    assert run.options["image_size"] == 512 and "image_max_pixels" in run.mapped
    # without the key, model_args.py's default budget 768 x 768 applies: 768 px
    assert _load(tmp_path, "qwen2.5-vl-3b-instruct", "finetuning_type: full\n").options["image_size"] == 768
    # CLIP resizes to 336 whatever the image: no change; LLaVA-NeXT's tiles follow the image: the default budget's
    # worst image, 768 x 768 (tests/test_lf_pixels.py)
    run = _load(tmp_path, "llava-1.5-7b-hf", "finetuning_type: lora\nimage_max_pixels: 262144\n")
    assert "image_size" not in run.options and "image_max_pixels" in run.mapped
    run = _load(tmp_path, "llava-v1.6-mistral-7b-hf", "finetuning_type: lora\nimage_min_pixels: 4096\n")
    assert run.unmodelled == [] and (run.options["image_size"], run.options["image_width"]) == (768, 768)


def test_llama_factory_all_on_llama4_leaves_the_router_out(tmp_path: Path) -> None:
    # find_all_linear_modules keeps classes whose name holds "Linear": Llama4Router (an nn.Linear subclass) is not
    # among them, so `all` is the attention's and the MLPs' names (peft's all-linear would take the router: refused)
    f = tmp_path / "lf.yaml"
    f.write_text("model_name_or_path: llama-4-scout-vision\nstage: sft\nfinetuning_type: lora\nlora_target: all\n")
    run = runfiles.load(str(f))[0]
    assert run.options["lora_targets"] == "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm-only"
    f.write_text("model_name_or_path: llama-4-scout-vision\nstage: sft\nfinetuning_type: lora\nlora_target: all\n"
                 "freeze_vision_tower: false\n")
    assert runfiles.load(str(f))[0].unmodelled == ["freeze_vision_tower"]


@pytest.mark.parametrize("ftype", ["full", "freeze"])
def test_llama_factory_freeze_language_model_trains_the_projector(tmp_path: Path, ftype: str) -> None:
    # model_utils/visual.py get_forbidden_modules (hiyouga/LLaMA-Factory @ ff6d4d12): language_model and lm_head frozen
    # by name; _setup_full_tuning trains the rest, _setup_freeze_tuning the projector_keys: the projector alone
    for name in ("llava-1.5-7b-hf", "qwen2-vl-2b-instruct"):
        run = _load(tmp_path, name, f"finetuning_type: {ftype}\nfreeze_language_model: true\n"
                    "freeze_multi_modal_projector: false\n")
        assert run.unmodelled == [] and {"freeze_language_model", "freeze_multi_modal_projector"} <= set(run.mapped)
        assert (run.options["method"], run.options["train_layers"], run.options["train_modules"]) == \
            ("freeze", "none", "projector")
        assert "train_vision" not in run.options and "freeze_layers" not in run.options


def test_llama_factory_freeze_language_model_with_the_tower(tmp_path: Path) -> None:
    run = _load(tmp_path, "llava-1.5-7b-hf", "finetuning_type: full\nfreeze_language_model: true\n"
                "freeze_multi_modal_projector: false\nfreeze_vision_tower: false\n")
    assert run.options["train_vision"] is True and run.options["train_modules"] == "projector"
    # freeze tuning: the tower's layers whose index is a trainable layer id (`.{idx}.` names) train: refused
    with pytest.raises(VramcalcError, match="freeze_vision_tower"):
        _load(tmp_path, "llava-1.5-7b-hf", "finetuning_type: freeze\nfreeze_language_model: true\n"
              "freeze_multi_modal_projector: false\nfreeze_vision_tower: false\n")
    # Llama 4 (every registered family now has a frozen-language-model path): mapped, with the tower trained too
    # (freeze_vision_tower false: --train-vision, --grid vlmfreeze)
    f = tmp_path / "l4.yaml"  # the llama-4-scout-vision preset (its image side; the config.json reads as text)
    f.write_text("model_name_or_path: llama-4-scout-vision\nstage: sft\nfinetuning_type: full\n"
                 "freeze_language_model: true\nfreeze_multi_modal_projector: false\n")
    assert runfiles.load(str(f))[0].options["train_modules"] == "projector"
    f.write_text(f.read_text() + "freeze_vision_tower: false\n")
    run = runfiles.load(str(f))[0]
    assert (run.options["train_modules"], run.options["train_vision"]) == ("projector", True)
