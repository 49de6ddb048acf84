"""Qwen2-VL and Qwen2.5-VL with --train-vision (issue 15; memory/vision.py _qwen_estimate, _qwen_block_saved):
the trained tower's parameters, gradients and optimizer state, its saved sets, and the step against the tracer."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cli_helpers import invoke
from test_qwen_vl import toy
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.params import count_params, qwen_block_params, vision_tower_params
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

TRAIN = {"method": "full", "precision": "pure-bf16", "train_vision": True}


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_the_whole_model_trains(kind: str) -> None:
    # --train-vision with full fine-tuning: every parameter trains (no tower block's output is unused, unlike
    # CLIP's layers above its feature layer); pure bf16: gradients 2 bytes a parameter (as the weights), AdamW 4
    m = toy(kind)
    b = estimate(m, TrainingSpec(seq_len=16, image_size=896, **TRAIN))  # type: ignore[arg-type]
    frozen = estimate(m, TrainingSpec(seq_len=16, image_size=896, method="full", precision="pure-bf16"))
    assert b.trainable_parameters == count_params(m)
    assert b.gradients == b.weights == 2 * count_params(m)
    assert b.optimizer_state == 2 * b.weights
    assert m.vision is not None
    assert b.gradients - frozen.gradients == 2 * vision_tower_params(m.vision)


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_every_block_keeps_its_saved_set_without_checkpointing(kind: str) -> None:
    # one more trained block adds its saved set (memory/vision.py _qwen_block_saved) to the activations; with
    # checkpointing only its input (4,096 patches x 1,280 x 2 bytes); the block's parameters to the gradients
    from vramcalc.core.memory.vision import _qwen_block_saved

    m = toy(kind)
    assert m.vision is not None
    bigger = replace(m, vision=replace(m.vision, num_layers=5))
    for gc, per_block in ((False, _qwen_block_saved(m.vision, 4096, 2, True)), (True, 4096 * 1280 * 2)):
        t = TrainingSpec(seq_len=16, image_size=896, grad_checkpointing=gc, **TRAIN)  # type: ignore[arg-type]
        b4, b5 = estimate(m, t), estimate(bigger, t)
        assert b5.activations - b4.activations == per_block
        assert b5.gradients - b4.gradients == 2 * qwen_block_params(m.vision)


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("gc", [False, True], ids=["no-gc", "gc"])
def test_traced_trained_tower(kind: str, gc: bool) -> None:
    # one 896 px image (4,096 patches), 16 text tokens under a toy language model: the trained tower's backward
    # is the step's peak (a block's MLP backward, or Qwen2.5-VL's ln_q backward: aten.mul); measured -0.02 %,
    # -0.04 %, -0.03 %, -0.04 % (benchmarks/accuracy.py --grid qwen-vl, the toy train-vision cases)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = toy(kind)
    t = TrainingSpec(seq_len=16, batch_size=1, image_size=896, grad_checkpointing=gc, **TRAIN)  # type: ignore[arg-type]
    r, b = trace(m, t), estimate(m, t)
    assert r.trainable_parameters == b.trainable_parameters == count_params(m)
    assert r.peak_op == "aten.mul.Tensor" and b.peak_phase == r.peak_phase == "backward"
    assert -0.005 <= (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes <= 0.01


def test_adapters_on_the_tower_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    m = presets.find_model("qwen2.5-vl-3b-instruct")
    with pytest.raises(UnsupportedCombination, match="--method full"):
        estimate(m, TrainingSpec(method="lora", train_vision=True))
    code, out, err = invoke(["estimate", "qwen2-vl-2b-instruct", "--train-vision", "--image-size", "448"], capsys)
    assert code == 0, err
    assert "trained (--train-vision" in out
    code, _, err = invoke(["estimate", "qwen2-vl-2b-instruct", "--train-vision", "--method", "qlora"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--method full" in err


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_traced_eager_tower_forward(kind: str) -> None:
    # --attention eager without checkpointing (the tower frozen, run without grad): the tower's forward at its
    # eager softmax (16 heads x 4,096^2 scores: the scaled 16-bit scores, their fp32 copy, the fp32 softmax) is
    # the step's peak; measured -0.00 % for both (benchmarks/accuracy.py --grid qwen-vl, the toy eager cases)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = toy(kind)
    t = TrainingSpec(seq_len=16, batch_size=1, image_size=896, method="lora", attention="eager")
    r, b = trace(m, t), estimate(m, t)
    assert r.peak_op == "aten._softmax.default" and b.peak_phase == r.peak_phase == "forward"
    assert -0.005 <= (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes <= 0.01
    sdpa = estimate(m, TrainingSpec(seq_len=16, batch_size=1, image_size=896, method="lora"))
    assert b.tensor_peak_bytes - sdpa.tensor_peak_bytes > 16 * 4096 ** 2 * 8  # the scores dominate


@pytest.mark.parametrize(("kind", "images", "side"), [("qwen2_vl", 2, 644), ("qwen2_5_vl", 1, 896)],
                         ids=["qwen2-vl-2-images", "qwen2.5-vl"])
def test_traced_eager_with_checkpointing(kind: str, images: int, side: int) -> None:
    # --attention eager with checkpointing (the frozen tower runs with grad: transformers hooks its patch embedding):
    # the recomputed block saves each image's fp32 softmax and 16-bit probabilities, and its backward peaks at the
    # last image's aten._softmax_backward_data (16 heads x n^2: its softmax and two fp32 gradients; with two images
    # the other's saved pair and qkv's output too); measured -0.03 % and -0.01 % (benchmarks/accuracy.py --grid
    # qwen-vl, the toy eager gc cases)
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    m = toy(kind)
    t = TrainingSpec(seq_len=16, batch_size=1, images=images, image_size=side, method="lora", attention="eager",
                     grad_checkpointing=True)
    r, b = trace(m, t), estimate(m, t)
    assert r.peak_op == "aten._softmax_backward_data.default" and b.peak_phase == r.peak_phase == "backward"
    assert -0.005 <= (b.tensor_peak_bytes - r.peak_bytes) / r.peak_bytes <= 0.01
