"""LoRA / QLoRA whose targets reach the SigLIP tower of Gemma 3 multimodal or Idefics3 / SmolVLM (issue 15;
core/memory/siglip_lora.py): which image-side Linears peft adapts, their parameters, the tower's saved sets, the
refusals, and the step against the tracer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from cli_helpers import invoke
from test_gemma3_vision import TINY, gemma3
from test_idefics3 import _toy
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory import siglip_lora as sl
from vramcalc.core.memory.vision import _siglip_layer_saved
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

TARGET_SETS = (("all-linear",), ("auto",), ("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj"),
               ("q_proj", "out_proj", "fc1", "fc2"), ("gate_proj", "up_proj", "down_proj"), ("q_proj", "proj"))


def _meta_model(kind: str) -> Any:
    """The library's own model class on a small config (both stacks' module names are those of any size)."""
    transformers = pytest.importorskip("transformers")
    text = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "intermediate_size": 128, "vocab_size": 300}
    tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
             "image_size": 64, "patch_size": 8}
    if kind == "siglip":  # Gemma 3's published vision_config has vision_use_head false (hf_config refuses true)
        cfg = transformers.Gemma3Config(text_config=dict(text, head_dim=32),
                                        vision_config=dict(tower, vision_use_head=False), mm_tokens_per_image=16)
        return transformers.Gemma3ForConditionalGeneration(cfg)
    cfg = transformers.Idefics3Config(text_config=text, vision_config=tower, scale_factor=2)
    return transformers.Idefics3ForConditionalGeneration(cfg)


@pytest.mark.parametrize("name", ["gemma-3-4b-it-vision", "smolvlm-256m-instruct"])
def test_targets_are_what_peft_adapts(name: str) -> None:
    # peft 0.21's own matching (get_peft_model on the meta model of transformers 5.24's
    # Gemma3ForConditionalGeneration / Idefics3ForConditionalGeneration): the image-side modules it wraps
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    m = presets.find_model(name)
    assert m.vision is not None
    for targets in TARGET_SETS:
        if m.vision.kind == "siglip" and targets == ("q_proj", "proj"):
            targets = ("q_proj",)  # no Gemma 3 module is named proj: peft refuses a target it never finds
        wanted: Any = "all-linear" if targets == ("all-linear",) else \
            ["q_proj", "v_proj"] if targets == ("auto",) else list(targets)
        with torch.device("meta"):
            wrapped = peft.get_peft_model(_meta_model(m.vision.kind), peft.LoraConfig(r=4, target_modules=wanted))
        names = {n.split(".lora_A")[0] for n, _ in wrapped.named_parameters() if "lora_A" in n}
        image = {n for n in names if "language_model" not in n and "text_model" not in n}
        tower, connector, text = sl.tower_lora_targets(m, targets)
        assert {n.split("layers.")[1].split(".", 2)[-1].split(".")[-1] for n in image if "layers." in n} \
            == set(tower), targets
        assert {n.split("model.connector.")[1] for n in image if "connector." in n} == set(connector), targets
        assert all("layers." in n or "connector." in n for n in image), image
        # the language model's targets: every name but the tower-only ones (out_proj, fc1, fc2, proj)
        assert text == tuple(t for t in targets if t not in ("out_proj", "fc1", "fc2", "proj")), targets


@pytest.mark.parametrize("name", ["gemma-3-4b-it-vision", "smolvlm-256m-instruct"])
def test_adapter_count_is_the_librarys(name: str) -> None:
    # sum(p.numel()) of the image side's lora_A / lora_B on the meta model of the published config, rank 16,
    # all-linear and the default q_proj, v_proj
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from vramcalc.trace._hf import build_model

    m = presets.find_model(name)
    assert m.vision is not None
    small = replace(m, num_layers=2, sliding_window_layers=1 if m.sliding_window_layers else None,
                    vision=replace(m.vision, num_layers=2))
    for targets, wanted in ((("all-linear",), "all-linear"), (("auto",), ["q_proj", "v_proj"])):
        t = TrainingSpec(method="lora", lora_targets=targets)
        with torch.device("meta"):
            hf, _ = build_model(small, TrainingSpec(), torch.bfloat16)
            wrapped = peft.get_peft_model(hf, peft.LoraConfig(r=16, target_modules=wanted))
        image = sum(p.numel() for n, p in wrapped.named_parameters()
                    if "lora_" in n and "language_model" not in n and "text_model" not in n)
        assert image == sl.adapter_params(small, t), targets


def test_all_linear_layer_saves_the_trained_layers_set() -> None:
    # every Linear adapted, 16-bit adapters, the layer's input needing a gradient: the frozen Linears save nothing
    # but each lora_A saves its module's own input, so the layer keeps what the trained layer keeps
    # (memory/vision.py _siglip_layer_saved) plus lora_A's six outputs (rows x rank, bf16)
    m = gemma3()
    assert m.vision is not None
    t = TrainingSpec(method="lora", lora_targets=("all-linear",), adapter_dtype="bf16")
    rows = 4096
    assert sl.layer_saved(m.vision, t, rows, 2, sl.SIGLIP_LINEARS, True) \
        == _siglip_layer_saved(m.vision, t, rows, 2) + 6 * rows * 16 * 2
    # fp32 adapters (the default): each adapted Linear's input is an fp32 copy of its own (q, k, v each one)
    fp32 = replace(t, adapter_dtype="fp32")
    h, i = m.vision.hidden_size, m.vision.intermediate_size
    assert sl.layer_saved(m.vision, fp32, rows, 2, ("q_proj", "v_proj"), True) \
        == sl.layer_saved(m.vision, fp32, rows, 2, (), True) + 2 * rows * (h * 4 + 16 * 4)
    # the bottom layer (input without gradient) with fc2 alone: only fc2's adapter saves (no frozen op needs one)
    assert sl.layer_saved(m.vision, fp32, rows, 2, ("fc2",), False) == rows * (i * 4 + 16 * 4)


def test_default_targets_now_reach_the_tower() -> None:
    # --lora-targets auto (q_proj, v_proj) adds the tower's q/v adapters: 27 layers x 2 x rank 16 x (1152 + 1152)
    # trainable parameters on Gemma 3 4B; names the tower lacks (o_proj) leave it frozen
    m = presets.find_model("gemma-3-4b-it-vision")
    base = estimate(m, TrainingSpec(method="lora", lora_targets=("o_proj",)))
    both = estimate(m, TrainingSpec(method="lora", lora_targets=("o_proj", "q_proj", "v_proj")))
    text_qv = estimate(m, TrainingSpec(method="lora", lora_targets=("o_proj", "q_proj", "v_proj"),
                                       grad_checkpointing=True))
    tower = 27 * 2 * 16 * (1152 + 1152)
    assert both.details["weights.image_adapters"] == tower * 4
    assert text_qv.trainable_parameters == both.trainable_parameters
    assert both.tensor_peak_bytes > base.tensor_peak_bytes
    assert any("also adapts the tower's q_proj, v_proj" in n for n in both.notes)


def test_refusals_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    for model, args, needle in (
            ("gemma-3-4b-it-vision", ["--lora-targets", "fc1,fc2"], "language-model target"),
            ("smolvlm-256m-instruct", ["--lora-targets", "proj"], "language-model target"),
            ("gemma-3-4b-it-vision", ["--precision", "amp-bf16"], "--precision bf16"),
            ("smolvlm-256m-instruct", ["--lora-dropout", "0.05"], "--lora-dropout 0")):
        code, _, err = invoke(["estimate", model, "--method", "lora", *args], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    with pytest.raises(UnsupportedCombination):
        estimate(presets.find_model("smolvlm-256m-instruct"),
                 TrainingSpec(method="qlora", precision="amp-bf16", lora_targets=("all-linear",)))


@pytest.mark.parametrize("kw", [{"lora_targets": ("all-linear",)},
                                {"lora_targets": ("all-linear",), "grad_checkpointing": True},
                                {"attention": "eager"}],
                         ids=["all-linear", "all-linear-gc", "eager"])
def test_traced_gemma3(kw: dict[str, Any]) -> None:
    # Gemma 3's proportions, small (test_gemma3_vision.TINY), adapters on its 2-layer tower; the bounds as there
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = TrainingSpec(method="lora", seq_len=128, batch_size=2, **kw)
    r, b = trace(TINY, t), estimate(TINY, t)
    assert r.trainable_parameters == b.trainable_parameters
    assert -0.01 <= (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes <= 0.03


@pytest.mark.parametrize("kw", [{"lora_targets": ("all-linear",)},
                                {"lora_targets": ("q_proj", "out_proj", "fc1", "fc2", "proj"),
                                 "adapter_dtype": "bf16", "grad_checkpointing": True}],
                         ids=["all-linear", "named-bf16-gc"])
def test_traced_idefics3_image_side_peak(kw: dict[str, Any]) -> None:
    # SmolVLM 256M's tower (17 tiles of 1,024 patches) adapted, on a toy language model: the image side is the peak
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m, t = _toy("smolvlm-256m-instruct"), TrainingSpec(method="lora", seq_len=128, **kw)
    r, b = trace(m, t), estimate(m, t)
    assert r.trainable_parameters == b.trainable_parameters
    assert abs(b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes < 0.01
    assert b.peak_phase == r.peak_phase
