"""Issue 13's FP8 training through accelerate's torchao backend (--fp8, memory/fp8.py).

torchao 0.18 float8/float8_linear.py matmul_with_hp_or_float8_args saves the high-precision input and weight, as
nn.Linear's mm does: with 16-bit weights nothing saved changes; under autocast the swapped Linears' fp32 weights get
no cached 16-bit copy (Float8Linear never calls F.linear). Traced: benchmarks/accuracy.py --grid fp8 (the tracer
test below needs torchao; CI does not install it, and the committed trace cache carries the grid:
tests/test_committed_grids.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from test_upcast import _write
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory import fp8 as _fp8
from vramcalc.core.params import block_linears
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets, runfiles

# tinyllama-1.1b cut to 2 decoder layers (presets/models; hidden 2048, 4 KV heads of 64, intermediate 5632)
TINY = replace(presets.find_model("tinyllama-1.1b"), num_layers=2)
FULL: dict[str, object] = {"method": "full", "batch_size": 2, "seq_len": 512}


def _spec(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{**FULL, **kw})  # type: ignore[arg-type]


def test_sixteen_bit_weights_save_what_nn_linear_saves() -> None:
    # bf16 full fine-tuning: Float8Linear saves input_hp and weight_hp_t, nn.Linear's mm the same two, so the phases
    # move only where a swapped Linear's casts top the layer's own temporaries; here the head's moments stay the peak
    # (traced: --grid fp8 bf16 cases, peak error 0.00 %)
    off = estimate(TINY, _spec(precision="bf16"))
    for recipe in ("tensorwise", "rowwise"):
        on = estimate(TINY, _spec(precision="bf16", fp8=recipe))
        assert on.phases == off.phases and on.tensor_peak_bytes == off.tensor_peak_bytes
        assert any("fp8 " + recipe in n for n in on.notes)
        # forward: the MLP's down projection (5632 -> 2048) over 2 x 512 tokens: its input's float8 bits beside the
        # weight's cast, 9 bytes per weight element (memory/fp8.py Fp8Casts.forward; measured on one Float8Linear
        # under the tracer's MemoryTracker: 108,004,352 B for 2048 x 2048 -> 5632, = 2048 * 2048 + 9 * 2048 * 5632)
        assert on.details["temporaries.layer_forward"] == 1024 * 5632 + 9 * 5632 * 2048
    # one Float8Linear, 2048 x 2048 -> 5632 in bf16, measured under the tracer's MemoryTracker: forward 108,004,352 B
    # beyond its input and weight (the input's bits beside the weight's cast, x + 9 w, and 1,024 B of scales); backward
    # 135,267,840 B beyond the incoming gradient (y + w + 2 x + 9 y: grad_output's second cast beside the first bits,
    # the weight's bits and grad_input; 1,536 B of scales)
    x, w, y = 2048 * 2048, 2048 * 5632, 2048 * 5632
    one = _fp8.Fp8Casts(((2048, 5632),), 2)
    assert one.forward(2048) == x + 9 * w == 108_004_352 - 1024
    assert one.backward(2048) - 2 * y == y + w + 2 * x + 9 * y == 135_267_840 - 1536


def test_autocast_caches_no_copy_of_a_swapped_weight() -> None:
    # amp-bf16: the forward's end holds every Linear's cached bf16 copy without fp8; with it only the head's (and under
    # tensorwise, accelerate's first nn.Linear: layers.0.self_attn.q_proj, 2048 x 2048) remain. The block Linears'
    # parameters from params.block_linears (2 layers), 2 bytes each.
    block = sum(lin.in_features * lin.out_features * lin.count for lin in block_linears(TINY))
    assert block == 2 * (2048 * 2048 * 2 + 2048 * 256 * 2 + 3 * 2048 * 5632)
    off = estimate(TINY, _spec(precision="amp-bf16")).phases["forward"]
    assert off - estimate(TINY, _spec(precision="amp-bf16", fp8="rowwise")).phases["forward"] == 2 * block
    assert off - estimate(TINY, _spec(precision="amp-bf16", fp8="tensorwise")).phases["forward"] == \
        2 * (block - 2048 * 2048)


@pytest.mark.parametrize("kw, what", [
    ({"method": "lora"}, "--method lora"),
    ({"fsdp": "full-shard", "gpus_per_node": 2}, "sharded weights"),
    ({"loss": "chunked"}, "--loss chunked"),
    ({"mode": "inference"}, "--mode inference"),
    ({"activation_offload": True}, "--activation-offload"),
])
def test_unmodelled_runs_are_refused_in_one_line(kw: dict[str, object], what: str) -> None:
    with pytest.raises(UnsupportedCombination, match=what) as e:
        estimate(TINY, _spec(precision="bf16", fp8="tensorwise", **kw))
    assert "\n" not in str(e.value) and "drop --fp8" in str(e.value)


def test_other_families_are_refused() -> None:
    # GPT-2's blocks are transformers Conv1D, not nn.Linear: nothing is swapped there, not traced
    with pytest.raises(UnsupportedCombination, match="gpt2"):
        estimate(presets.find_model("gpt2"), _spec(precision="bf16", fp8="rowwise"))


def test_readers_map_fp8(tmp_path: Path) -> None:
    ax = runfiles.load(_write(tmp_path, "ax.yaml", "base_model: tinyllama-1.1b\nbf16: true\nfp8: true\n"))[0]
    assert ax.options["fp8"] == "tensorwise" and "fp8" in ax.mapped and not ax.unmodelled
    lf_head = "model_name_or_path: tinyllama-1.1b\nstage: sft\nfinetuning_type: full\nfp8: true\n"
    lf = runfiles.load(_write(tmp_path, "lf.yaml", lf_head + "fp8_backend: torchao\n"))[0]
    assert lf.options["fp8"] == "rowwise" and {"fp8", "fp8_backend"} <= set(lf.mapped) and not lf.unmodelled
    # fp8_backend te / msamp and the FSDP float8 all-gather: tests/test_fp8_all_gather.py


def test_tracer_matches_the_estimate() -> None:
    pytest.importorskip("torchao")
    from vramcalc.trace._run import trace

    # one --grid fp8 shape, shorter: amp-bf16 rowwise, tinyllama cut to 2 layers, b1 s128
    t = _spec(precision="amp-bf16", fp8="rowwise", batch_size=1, seq_len=128)
    traced = trace(TINY, t)
    assert any("Float8Linear" in n for n in traced.notes)
    est = estimate(TINY, t)
    assert abs(est.phases["forward"] - traced.phase_peaks["forward"]) <= 0.01 * traced.phase_peaks["forward"]


def test_the_bottom_layers_casts_are_a_moment_of_their_own() -> None:
    # backward.bottom_fp8: every gradient but the bottom layer's q / k / v (2048 x (2048 + 256 + 256)) and the untied
    # embedding's, in bf16 (memory/fp8.py unmade_gradient_params); backward.bottom (the layer's MLP
    # backward) every gradient but the embedding's and the bottom layer's own (memory/__init__.py
    # _dense_late_gradient_bytes): TinyLlama's layer is q, o 2048 x 2048, k, v 2048 x 256, gate / up / down
    # 2048 x 5632 and two 2048-wide norms, 44,044,288 parameters; timeline draws the fp8 moment as a point
    from vramcalc.core.memory.timeline import timeline

    t = _spec(precision="bf16", fp8="rowwise")
    b = estimate(TINY, t)
    bottom = next(mo for mo in b.named_moments() if mo.key == "backward.bottom")
    fp8 = next(mo for mo in b.named_moments() if mo.key == "backward.bottom_fp8")
    # (both hold the gradients above the bottom layer; the fp8 moment its MLP's and o_proj's too)
    assert fp8.component("gradients") - bottom.component("gradients") == 2 * (44_044_288 - 2048 * 2560)
    assert any(p.label == "bottom layer's float8 casts (--fp8)" for p in timeline(TINY, t).points)
