"""8-bit QLoRA over an fp32 load under the Trainer's autocast (--precision amp-bf16 --method qlora --quant-bits 8): a
TRL file with load_in_8bit and bf16 and no dtype (memory/qlora_fp32.py int8_active). The whole step against the
tracer: benchmarks/results/accuracy_qlora8-fp32load.md (--grid qlora8-fp32load)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from test_qlora_fp32load import SMALL4  # a small llama: hidden 256, intermediate 512, 4 heads / 2 kv of 64
from vramcalc.core.checks import check_int8_fp32
from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.activations import dequant_bytes, layer_activations
from vramcalc.core.memory.precision import recipe_of
from vramcalc.core.params import quantized_linears
from vramcalc.core.specs import TrainingSpec

# --grid qlora8-fp32load's first run: TRL's bf16 adapters, lora_dropout 0.05, no kbit preparation
Q8FP32 = {"method": "qlora", "precision": "amp-bf16", "quant_bits": 8, "kbit_prep": False,
          "lora_targets": ("all-linear",), "adapter_dtype": "bf16", "lora_dropout": 0.05}


def _t(**kw: object) -> TrainingSpec:
    return TrainingSpec(**{**Q8FP32, "batch_size": 2, "seq_len": 64, **kw})  # type: ignore[arg-type]


def test_ctx_inputs_fp32_but_o_proj() -> None:
    # MatMul8bitLt keeps A in ctx in its own dtype: fp32 for the fp32 normed input (q/k/v and gate/up, 4 x 256) and for
    # down_proj's fp32 act(gate) * up (4 x 512); o_proj's is SDPA's bf16 output under autocast (2 x 4 heads x 64)
    la = layer_activations(SMALL4, _t(), recipe_of(_t()), False)
    assert la.int8_ctx_per_token == 4 * 256 + 2 * 256 + 4 * 256 + 4 * 512 == 4_608
    terms = {x.name: x.per_token for x in la.terms}
    assert terms["down_proj input (kept by bitsandbytes 8-bit)"] == 4 * 512
    assert terms["mlp act output, up"] == 2 * 4 * 512  # fp32 act(gate) and up_proj's fp32 output
    # over a bf16 load under the same autocast every input is bf16: 2 x (256 + 256 + 256 + 512)
    bf16 = _t(precision="autocast-bf16")
    assert layer_activations(SMALL4, bf16, recipe_of(bf16), False).int8_ctx_per_token == 2_560


def test_fp32_dequantized_weight_and_no_block_copies() -> None:
    t = _t()
    _, bwd = dequant_bytes(SMALL4, t, recipe_of(t), quantized_linears(SMALL4))
    # MatMul8bitLt.backward's `CB.to(ctx.dtype_A)`: the largest Linears (256 x 512) dequantized to fp32
    assert bwd.weight_c == 4 * 256 * 512 == 524_288
    # autocast casts no int8 weight: the only copy is lm_head's bf16 one (2,048 x 256 x 2 B)
    assert estimate(SMALL4, t).details["activations.autocast_weight_copies"] == 2048 * 256 * 2


@pytest.mark.parametrize(("kw", "what"), [
    ({"precision": "amp-fp16"}, "--precision amp-fp16"),
    ({"dora": True}, "--dora"),
    ({"grad_checkpointing": True, "reentrant_gc": True}, "--reentrant-gc"),
    ({"objective": "dpo"}, "--objective dpo"),
], ids=["amp-fp16", "dora", "reentrant", "dpo"])
def test_untraced_rest_refused(kw: dict[str, object], what: str) -> None:
    with pytest.raises(UnsupportedCombination, match=f"with {what} is not modelled"):
        check_int8_fp32(SMALL4, _t(**kw))


def test_untraced_family_refused_and_traced_allowed() -> None:
    with pytest.raises(UnsupportedCombination, match="with a mistral model is not modelled"):
        check_int8_fp32(replace(SMALL4, family="mistral"), _t())
    check_int8_fp32(SMALL4, _t())  # amp-bf16 LoRA SFT on a Llama: modelled, no error


def test_traced_small() -> None:
    # SMALL4 at b2 s256 with checkpointing against the tracer (trace/_hf.py _Dequant8bit, peft's lora.bnb.Linear8bitLt
    # forward in trace/_peft.py): within --grid qlora8-fp32load's bars (worst under -2 %, max 5 %), under 20 s
    pytest.importorskip("transformers")
    from vramcalc.trace import trace

    t = _t(seq_len=256, grad_checkpointing=True)
    start = time.perf_counter()
    got = trace(SMALL4, t).peak_bytes
    assert time.perf_counter() - start < 20
    est = estimate(SMALL4, t).tensor_peak_bytes
    assert -2.0 <= 100 * (est - got) / got <= 5.0
