"""bitsandbytes LLM.int8 matmul temporaries (Linear8bitLt, threshold 6.0): shared by an 8-bit DPO reference
(memory/preference.py) and 8-bit QLoRA's base Linears (memory/activations.py DequantBytes.int8)."""

from __future__ import annotations

from vramcalc.core.units import dtype_bytes


def int8_linear_bytes(d_in: int, d_out: int, compute: str) -> int:
    """Per row, the peak of one bitsandbytes 0.50 LLM.int8 matmul beyond its input, with or without grad
    (Linear8bitLt.forward → autograd/_functions.py MatMul8bitLt.forward, threshold 6.0) on a `compute`-dtype input:
    int8_vectorwise_quant(A.to(float16)) (an fp16 copy unless the input is fp16; backends/cuda/ops.py: row_stats fp32
    and the int8 rows, then `A.abs() >= threshold`: an fp16 abs and a bool mask at once), then int8_mixed_scaled_mm →
    int8_scaled_mm (backends/default/ops.py): the int32 product (int8_linear_matmul) and int8_mm_dequant's fp16 output
    (backends/cuda/ops.py) with its `.to(dtype)` copy unless fp16, CA and SCA still alive. The outlier columns
    (A[:, outlier_cols] and the dequantized weight columns) depend on the data: not counted (the note says so)."""
    fp16 = compute == "fp16"
    quant = (0 if fp16 else 2 * d_in) + d_in + 4 + 2 * d_in + d_in
    mm = d_in + 4 + 4 * d_out + 2 * d_out + (0 if fp16 else dtype_bytes(compute) * d_out)
    return max(quant, mm)
