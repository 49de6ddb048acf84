"""4-bit QLoRA over an fp32 load under the Trainer's autocast (--precision amp-bf16 --method qlora): TRL's default, an
fp32 compute dtype (memory/qlora_fp32.py). The whole step against the tracer: benchmarks/results/
accuracy_qlora-fp32load.md (--grid qlora-fp32load)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import dequant_bytes, layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import quantized_linears
from vramcalc.core.specs import ModelSpec, TrainingSpec

# TRL's QLoRA as --grid qlora-fp32load declares it: bf16 adapters, lora_dropout 0.05, no kbit preparation
FP32Q = {"method": "qlora", "precision": "amp-bf16", "quant_bits": 4, "double_quant": False, "kbit_prep": False,
         "lora_targets": ("all-linear",), "adapter_dtype": "bf16", "lora_dropout": 0.05}
# A small llama (hidden 256, intermediate 512, 4 heads / 2 kv of 64), as tests/test_qlora8_more.py's SMALL4
SMALL4 = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=2048, hidden_size=256,
                   intermediate_size=512, num_layers=4, num_attention_heads=4, num_kv_heads=2)


def _t(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{**FP32Q, "batch_size": 2, "seq_len": 64, **kw})  # type: ignore[arg-type]


def test_dequantized_weight_and_casts_by_hand() -> None:
    t = _t()
    fwd, bwd = dequant_bytes(SMALL4, t, recipe_of(t), quantized_linears(SMALL4))
    # the largest block Linears, gate/up/down_proj, 256 x 512 = 131,072 elements: the fp32 dequantized weight (4 B) and
    # autocast's bf16 copy of it (2 B), forward and backward
    assert fwd.weight_c == bwd.weight_c == 6 * 131_072 == 786_432
    # forward at 128 tokens, down_proj (in 512, out 256) the larger moment: the weights, autocast's bf16 copies of the
    # input and the output (2 x 128 x (512 + 256) = 196,608), the fp32 product it reads (4 x 128 x 512 = 262,144) and
    # the MLP's fp32 normed input (4 x 128 x 256 = 131,072), less down_proj's adapter set the layer's saved set counts
    # but which is made after this matmul: its bf16 cast, its dropout mask and lora_A's rank-16 bf16 output, per token
    # 2 x 512 + 512 + 2 x 16
    assert fwd.down_lora_t == 1_568
    assert fwd.forward(128, False) == 786_432 + 196_608 + 262_144 + 131_072 - 128 * 1_568
    # under checkpointing (nothing saved): up_proj (in 256) holds its fp32 input and the fp32 act(gate) (4 x 128 x
    # (256 + 512) = 393,216), down_proj the product and the normed input (262,144 + 131,072): the same here
    assert fwd.forward(128, True) == 786_432 + 196_608 + 393_216
    # backward at the cast: the fp32 weight, its bf16 copy and the incoming gradient (2 x 128 x out)
    assert bwd.backward(128) == max(786_432 + 2 * 128 * 512, 262_144 + (2 + 4) * 128 * 512 + 2 * 128 * 256)


def test_mlp_intermediates_fp32() -> None:
    # Linear4bit returns fp32 for its fp32 normed input: act(gate)'s input, its output and up_proj's, 4 B per unit
    def saved(t: TrainingSpec) -> dict[str, int]:
        return {x.name: x.per_token for x in layer_activations(SMALL4, t, recipe_of(t), False).terms}

    assert saved(_t())["mlp act input"] == 4 * 512 and saved(_t())["mlp act output, up"] == 2 * 4 * 512
    # over a bf16 load under the same autocast (compute dtype bf16): 2 B
    assert saved(_t(precision="autocast-bf16"))["mlp act input"] == 2 * 512


def test_no_block_weight_copies_and_bf16_states() -> None:
    e = estimate(SMALL4, _t())
    # no fp32 leaf block weight to cast: the head's bf16 copy alone (2,048 x 256 x 2 B)
    assert e.details["activations.autocast_weight_copies"] == 2048 * 256 * 2
    # TRL casts the adapters to bf16 (sft_trainer.py); torch AdamW's states are zeros_like(p): 2 x 2 B per parameter
    assert e.optimizer_state == 2 * 2 * e.trainable_parameters
    assert estimate(SMALL4, _t(adapter_dtype="fp32")).optimizer_state == 2 * 4 * e.trainable_parameters


@pytest.mark.parametrize("gc", [False, True], ids=["no-gc", "gc"])
def test_traced_small(gc: bool) -> None:
    # SMALL4 at b2 s256 against the tracer (trace/_hf.py QuantLinear with an fp32 compute dtype, peft's
    # lora.bnb.Linear4bit forward): within --grid qlora-fp32load's bars (worst under -2 %, max 5 %)
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = _t(seq_len=256, grad_checkpointing=gc)
    got, est = trace(SMALL4, t).peak_bytes, estimate(SMALL4, t).tensor_peak_bytes
    assert -2.0 <= 100 * (est - got) / got <= 5.0


def test_tracer_still_refuses_fp32_without_autocast() -> None:
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    with pytest.raises(UnsupportedCombination, match="qlora needs a 16-bit compute dtype"):
        trace(SMALL4, replace(_t(), precision="fp32"))
