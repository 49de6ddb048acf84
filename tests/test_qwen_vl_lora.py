"""LoRA / QLoRA whose targets reach a Qwen2-VL / Qwen2.5-VL vision tower (issue 15; memory/vision.py
qwen_lora_targets, _qwen_lora_saved, _qwen_estimate): which image-side Linears peft adapts, their parameters, the
tower's saved sets for backward, and the step against the tracer."""

from __future__ import annotations

import pytest

from cli_helpers import invoke
from test_qwen_vl import toy
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.vision import qwen_lora_targets
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

TARGET_SETS = (("all-linear",), ("q_proj", "v_proj"), ("gate_proj", "up_proj", "down_proj"),
               ("q_proj", "qkv", "attn.proj", "fc1", "fc2", "mlp.0", "mlp.2"))


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_targets_are_what_peft_adapts(kind: str) -> None:
    # peft 0.21's own matching (get_peft_model on the meta model of transformers 5.24's Qwen2VLForConditionalGeneration
    # / Qwen2_5_VLForConditionalGeneration, a 2-block tower): the visual modules it wraps, by their short names
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    text = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "intermediate_size": 128, "vocab_size": 100,
            "rope_scaling": {"type": "mrope", "mrope_section": [4, 6, 6]}}
    if kind == "qwen2_vl":
        cfg = transformers.Qwen2VLConfig(text_config=text, vision_config={
            "depth": 2, "embed_dim": 32, "num_heads": 2, "hidden_size": 64, "mlp_ratio": 4})
        cls = transformers.Qwen2VLForConditionalGeneration
    else:
        cfg = transformers.Qwen2_5_VLConfig(text_config=text, vision_config={
            "depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
            "fullatt_block_indexes": [1]})
        cls = transformers.Qwen2_5_VLForConditionalGeneration
    m = toy(kind)
    for targets in TARGET_SETS:
        if kind == "qwen2_5_vl" and ("fc1" in targets):
            targets = tuple(t for t in targets if t not in ("fc1", "fc2"))
        with torch.device("meta"):
            wrapped = peft.get_peft_model(cls(cfg), peft.LoraConfig(
                r=4, target_modules="all-linear" if targets == ("all-linear",) else list(targets)))
        adapted = {n.split(".lora_A")[0].split("visual.")[1] for n, _ in wrapped.named_parameters()
                   if "lora_A" in n and "visual." in n}
        tower, merger, text_targets = qwen_lora_targets(m, targets)
        assert {a.split(".", 2)[-1] for a in adapted if a.startswith("blocks.")} == \
            {"attn." + t if t in ("qkv", "proj") else "mlp." + t for t in tower}, targets
        assert {a.removeprefix("merger.") for a in adapted if a.startswith("merger.")} == set(merger), targets
        assert text_targets == tuple(t for t in targets if t not in ("qkv", "attn.proj", "fc1", "fc2", "mlp.0",
                                                                      "mlp.2")), targets


def test_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    m = presets.find_model("qwen2.5-vl-3b-instruct")
    # 'proj' also matches patch_embed.proj, a Conv3d (peft wraps it: seen in test_targets_are_what_peft_adapts' model)
    with pytest.raises(UnsupportedCombination, match="attn.proj"):
        estimate(m, TrainingSpec(method="lora", lora_targets=("q_proj", "proj")))
    for args, needle in ((["--lora-targets", "qkv,fc1"], "language-model target"),
                         (["--lora-targets", "all-linear", "--attention", "eager"], "--attention sdpa"),
                         (["--lora-targets", "all-linear", "--precision", "amp-bf16"], "--precision bf16")):
        code, _, err = invoke(["estimate", "qwen2-vl-2b-instruct", "--method", "lora", *args], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_all_linear_adds_the_tower_adapters(kind: str) -> None:
    # all-linear on the toy (a 4-block tower of width 1,280): each block's adapters at rank 16, fp32, in the
    # gradients (4 bytes each) beside the language model's; q_proj,v_proj leaves the image side frozen
    m = toy(kind)
    assert m.vision is not None
    d, i, r = 1280, m.vision.intermediate_size, 16
    per_block = r * (d + 3 * d) + r * (d + d) + (r * 2 * (d + i) if kind == "qwen2_vl" else r * 3 * (d + i))
    merger = r * (4 * d + 4 * d) + r * (4 * d + 256)
    base = TrainingSpec(seq_len=16, image_size=896, method="lora")
    named = estimate(m, base)
    every = estimate(m, TrainingSpec(seq_len=16, image_size=896, method="lora", lora_targets=("all-linear",)))
    text_all = estimate(m, TrainingSpec(seq_len=16, image_size=896, method="lora", lora_targets=(
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")))
    tower = 4 * per_block + merger
    if kind == "qwen2_5_vl":  # its gate/up/down names reach the tower MLP too
        tower = 4 * r * (d + 3 * d + 2 * d) + merger
    assert every.trainable_parameters - text_all.trainable_parameters == tower
    assert every.gradients - text_all.gradients == 4 * tower
    assert every.activations > named.activations  # the tower's saved sets, kept for its adapters' backward


@pytest.mark.parametrize(("kind", "gc", "targets"), [
    ("qwen2_vl", False, ("all-linear",)), ("qwen2_5_vl", True, ("all-linear",)),
    ("qwen2_vl", False, ("q_proj", "v_proj", "attn.proj", "fc2"))], ids=["qwen2-vl", "qwen2.5-vl-gc", "qwen2-vl-named"])
def test_traced_tower_lora(kind: str, gc: bool, targets: tuple[str, ...]) -> None:
    # one 896 px image (4,096 patches), 16 text tokens under a toy language model, LoRA all-linear: the tower's
    # saved sets (no checkpointing: the forward's peak holds them) or its recomputed adapted block's backward
    # (checkpointing) make the peak; trainable counts are peft's (1,691,648, 1,774,848 and 602,112 traced);
    # measured -0.09 %, +0.7 % and -0.01 % (benchmarks/accuracy.py --grid qwen-vl, the toy all-linear cases and
    # the named one, whose bottom block runs its attention without grad: the fused sdpa, nothing saved below proj)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = toy(kind)
    t = TrainingSpec(seq_len=16, batch_size=1, image_size=896, method="lora", lora_targets=targets,
                     grad_checkpointing=gc)
    r, b = trace(m, t), estimate(m, t)
    assert r.trainable_parameters == b.trainable_parameters
    assert b.peak_phase == r.peak_phase == ("backward" if gc else "forward")
    assert -0.01 <= (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes <= 0.02
