"""A DPO reference in bitsandbytes 8-bit (LLM.int8) or double-quantized 4-bit storage (issue 13: --ref-quant 8bit /
4bit-dq, memory/preference.py): storage by hand and against bitsandbytes' own quantizers, the int8 matmul's
temporaries by hand, refusals. The forward against the tracer: benchmarks/results/accuracy_ref8.md (--grid ref8)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import estimate
from vramcalc.core.memory.preference import int8_linear_bytes
from vramcalc.core.memory.weights import quantized_storage
from vramcalc.core.params import count_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.io import presets

QWEN = presets.find_model("qwen2.5-0.5b")  # hidden 896, intermediate 4,864, 14 heads / 2 kv of 64, 24 layers
# A small llama (2 layers, hidden 256, intermediate 512, 4 heads / 2 kv of 64): q/o 256 × 256, k/v 256 × 128.
SMALL = ModelSpec(name="small-llama", source="test", family="llama", vocab_size=32_000, hidden_size=256,
                  intermediate_size=512, num_layers=2, num_attention_heads=4, num_kv_heads=2)
# (out_features, in_features) of SMALL's block Linears, per layer: q, k, v, o, gate, up, down
SMALL_LINEARS = [(256, 256), (128, 256), (128, 256), (256, 256), (512, 256), (512, 256), (256, 512)]
BASE = TrainingSpec(objective="dpo", precision="pure-bf16", batch_size=1, seq_len=512, prompt_len=128)


def test_eight_bit_reference_weights_by_hand() -> None:
    pre = estimate(QWEN, replace(BASE, ref_model="precomputed"))
    q8 = estimate(QWEN, replace(BASE, ref_quant="8bit"))
    # Qwen2.5-0.5B config.json: per layer q_proj and o_proj 896 × 896, k_proj and v_proj 896 × 128, gate/up/down
    # 896 × 4,864; bitsandbytes Int8Params: one int8 byte per element + an fp32 SCB per output row
    # (out features: q 896, k 128, v 128, o 896, gate 4,864, up 4,864, down 896); lm_head (tied) is skipped.
    quantized = 24 * (2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864)
    scb = 24 * 4 * (896 + 128 + 128 + 896 + 4864 + 4864 + 896)
    expected = quantized + scb + (count_params(QWEN) - quantized) * 2  # the rest in bf16
    assert q8.details["weights.reference"] == expected
    assert q8.weights - pre.weights == expected


def test_double_quantized_reference_weights_by_hand() -> None:
    q4 = estimate(QWEN, replace(BASE, ref_quant="4bit")).details["weights.reference"]
    dq = estimate(QWEN, replace(BASE, ref_quant="4bit-dq")).details["weights.reference"]
    # bitsandbytes quantize_4bit(compress_statistics=True): the fp32 absmax per 64-element block becomes a uint8 per
    # block + an fp32 absmax per 256 blocks + one fp32 offset per tensor. Blocks per tensor: q/o 896·896/64 = 12,544
    # (49 groups of 256), k/v 896·128/64 = 1,792 (7 groups), gate/up/down 896·4,864/64 = 68,096 (266 groups).
    saved = 0
    for blocks, groups, count in ((12_544, 49, 2), (1_792, 7, 2), (68_096, 266, 3)):
        saved += count * (4 * blocks - (blocks + 4 * groups + 4))
    assert q4 - dq == 24 * saved


def test_storage_matches_bitsandbytes_quantizers() -> None:
    bnb = pytest.importorskip("bitsandbytes")
    torch = pytest.importorskip("torch")
    from bitsandbytes import functional as F

    int8 = four = dq = 0
    for out_f, in_f in SMALL_LINEARS:
        w = torch.zeros(out_f, in_f, dtype=torch.float16)
        # Int8Params quantizes when moved off the CPU copy (nn/modules.py Int8Params._quantize): int8 CB + fp32 SCB
        p = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)._quantize(torch.device("cpu"))
        int8 += p.data.numel() * p.data.element_size() + p.SCB.numel() * p.SCB.element_size()
        for compress, total in ((False, "four"), (True, "dq")):
            q, st = F.quantize_4bit(w, blocksize=64, compress_statistics=compress, quant_type="nf4")
            parts = [q, st.absmax] + ([st.state2.absmax, st.offset] if compress else [])
            nbytes = sum(t.numel() * t.element_size() for t in parts)  # the 16-entry code table left aside
            if total == "four":
                four += nbytes
            else:
                dq += nbytes
    layers = SMALL.num_layers or 0
    assert sum(quantized_storage(SMALL, 8, False)[1:]) == layers * int8
    assert sum(quantized_storage(SMALL, 4, False)[1:]) == layers * four
    assert sum(quantized_storage(SMALL, 4, True)[1:]) == layers * dq


def test_int8_matmul_temporaries_by_hand() -> None:
    # up_proj of SMALL (256 → 512) per row, bf16 input: quantization = fp16 copy 2·256 + int8 rows 256 + fp32 row stat
    # 4 + fp16 abs 2·256 + bool mask 256 = 1,540; matmul = int8 rows 256 + row stat 4 + int32 product 4·512 + fp16
    # output 2·512 + its bf16 copy 2·512 = 4,356
    assert int8_linear_bytes(256, 512, "bf16") == 4356
    # fp16 input: no input copy and no output copy (.to(float16) returns the tensor itself): max(1,028, 3,332)
    assert int8_linear_bytes(256, 512, "fp16") == 3332
    # fp32 input (an fp32 reference): fp16 copy of the input, fp32 copy of the output: 256 + 4 + 2,048 + 1,024 + 2,048
    assert int8_linear_bytes(256, 512, "fp32") == 5380


def test_eight_bit_reference_forward_costs_more_than_bf16() -> None:
    # the int8 matmul's int32 and fp16 products exceed a bf16 layer's MLP moment (memory/preference.py
    # _int8_reference_plan); no dequantized weight copy, unlike 4-bit
    run = replace(BASE, batch_size=2)
    bf16 = estimate(QWEN, run).details["temporaries.reference_forward"]
    q8 = estimate(QWEN, replace(run, ref_quant="8bit")).details["temporaries.reference_forward"]
    q4 = estimate(QWEN, replace(run, ref_quant="4bit")).details["temporaries.reference_forward"]
    dq = estimate(QWEN, replace(run, ref_quant="4bit-dq")).details["temporaries.reference_forward"]
    assert q8 > bf16
    # double quantization: two fp32 vectors of one value per 64 weights of gate/up_proj (896 · 4,864 / 64) more
    assert dq - q4 == 2 * 4 * (896 * 4864 // 64)


@pytest.mark.parametrize(("model", "kw"), [
    ("qwen2.5-0.5b", {"precision": "amp-bf16", "ref_dtype": "fp16"}),  # autocast around an fp16 reference
    ("qwen1.5-moe-a2.7b", {}),  # MoE blocks: int8 experts' moments not derived
])
def test_eight_bit_reference_not_modelled_is_refused(model: str, kw: dict[str, str]) -> None:
    with pytest.raises(UnsupportedCombination, match="--ref-quant 8bit is modelled for a dense model"):
        estimate(presets.find_model(model), replace(BASE, ref_quant="8bit", **kw))  # type: ignore[arg-type]
