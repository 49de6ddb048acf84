"""LoRA / QLoRA whose targets reach Llama-3.2-Vision's vision tower (issue 15; core/memory/mllama.py lora_targets,
tower_adapter_params, tower_lora_saved, tower_lora_forward, tower_lora_backward): which image-side Linears peft
adapts, their parameters, the refusals, and the step against the tracer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cli_helpers import invoke
from test_mllama import _toy
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.mllama import TOWER_LINEARS, lora_targets, tower_adapter_params
from vramcalc.core.specs import TrainingSpec

TARGET_SETS = (("all-linear",), ("auto",), ("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj"),
               ("q_proj", "fc1", "fc2"), ("gate_proj", "up_proj", "down_proj"))


def _peft_model(targets: tuple[str, ...]):  # noqa: ANN202 - a peft model
    # peft 0.21's get_peft_model on the meta model the tracer builds for the toy cut (trace/_hf.py build_model:
    # transformers 5.24's MllamaForConditionalGeneration, a 4 + 1 layer tower), the targets as the tracer passes them
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from vramcalc.trace._config import lora_targets as peft_names
    from vramcalc.trace._hf import build_model

    m = _toy()
    hf, _ = build_model(m, TrainingSpec(method="lora", lora_targets=targets), torch.bfloat16)
    with torch.device("meta"):
        return m, peft.get_peft_model(hf, peft.LoraConfig(r=16, target_modules=peft_names(m, targets)))


@pytest.mark.parametrize("targets", TARGET_SETS)
def test_targets_and_counts_are_what_peft_adapts(targets: tuple[str, ...]) -> None:
    m, wrapped = _peft_model(targets)
    assert m.vision is not None
    adapted = {n.split(".lora_A")[0] for n, _ in wrapped.named_parameters() if "lora_A" in n}
    tower_adapted = {a for a in adapted if ".vision_model." in a}
    t = TrainingSpec(method="lora", lora_targets=targets)
    tower, projector, text = lora_targets(m, t)
    layers = m.vision.num_layers + m.vision.num_global_layers
    # every encoder layer (local and global) gets the same tower Linears
    assert {a.rsplit(".", 1)[-1] for a in tower_adapted} == set(tower), targets
    assert len(tower_adapted) == layers * len(tower)
    assert any("multi_modal_projector" in a for a in adapted) == projector
    assert set(TOWER_LINEARS) >= set(tower)
    # the adapter parameters on the image side: sum(p.numel()) of the lora_ parameters peft put there
    image_side = sum(p.numel() for n, p in wrapped.named_parameters()
                     if "lora_" in n and (".vision_model." in n or "multi_modal_projector" in n))
    tower_params, projector_params = tower_adapter_params(m, t)
    assert tower_params + projector_params == image_side, targets
    # and the language model's are what the text estimate counts: the whole trainable count matches
    assert estimate(m, replace(t, precision="bf16")).trainable_parameters == sum(
        p.numel() for p in wrapped.parameters() if p.requires_grad), targets
    assert text == tuple(x for x in targets if x not in ("fc1", "fc2"))


def test_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    m = _toy()
    with pytest.raises(UnsupportedCombination, match="language model"):
        lora_targets(m, TrainingSpec(method="lora", lora_targets=("fc1", "fc2")))
    with pytest.raises(UnsupportedCombination, match="all-linear"):
        lora_targets(m, TrainingSpec(method="lora", lora_targets=("q_proj", "multi_modal_projector")))
    code, out, err = invoke(["estimate", "llama-3.2-11b-vision-instruct", "--method", "lora", "--lora-targets",
                             "fc1"], capsys)
    assert code == 2 and err.count("\n") == 1 and "fc1" in err, err
    # full fine-tuning has no adapters: nothing on the tower
    assert tower_adapter_params(m, TrainingSpec(method="full")) == (0, 0)


def test_explain_lists_the_tower_adapters(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["explain", "llama-3.2-11b-vision-instruct", "--method", "lora", "--lora-targets",
                             "all-linear"], capsys)
    assert code == 0, err
    assert "LoRA adapters on the tower / projector" in out
    m = _toy()
    b = estimate(m, TrainingSpec(method="lora", precision="bf16", images=1, seq_len=16))
    assert any("adapts the tower" in n for n in b.notes)


@pytest.mark.parametrize(("method", "targets", "gc", "shape"), [
    ("lora", ("all-linear",), False, (1, 16, 2)),
    ("qlora", ("q_proj", "v_proj", "fc1", "fc2"), True, (2, 32, 1)),
    ("lora", ("q_proj", "o_proj", "fc2"), False, (1, 16, 1)),
])
def test_traced(method: str, targets: tuple[str, ...], gc: bool, shape: tuple[int, int, int]) -> None:
    # the tracer on the toy cut (peft matching the targets over the whole model): the estimate within 1 % of the
    # traced tensor peak, and never under it by more than 1 %; the trainable parameters are the library's
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = _toy()
    b_, s, n = shape
    t = TrainingSpec(method=method, precision="bf16", lora_targets=targets, grad_checkpointing=gc, batch_size=b_,
                     seq_len=s, images=n, kbit_prep=False)
    r, e = trace(m, t), estimate(m, t)
    assert r.trainable_parameters == e.trainable_parameters
    assert abs(e.tensor_peak_bytes - r.peak_bytes) <= 0.01 * r.peak_bytes, (e.tensor_peak_bytes, r.peak_bytes)
