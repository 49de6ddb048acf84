"""Byte units, element dtypes and their storage sizes. Pure: stdlib only."""

from __future__ import annotations

from typing import Literal

GB = 10**9  # decimal gigabyte: what the seed texts and vendors' boxes count
GIB = 2**30  # binary gibibyte: what nvidia-smi and torch.cuda report
MIB = 2**20

UNIT_BYTES: dict[str, int] = {"GB": GB, "GiB": GIB}

# Storage dtype of one tensor element.
Dtype = Literal["fp32", "bf16", "fp16", "fp8", "int8", "nf4", "int4"]

# Bits per stored element. 4-bit formats pack two elements per byte; their block-wise scales
# are counted separately (memory/weights.py), as bitsandbytes stores them in separate tensors.
BITS_PER_ELEMENT: dict[str, int] = {
    "fp32": 32,
    "bf16": 16,
    "fp16": 16,
    "fp8": 8,
    "int8": 8,
    "nf4": 4,
    "int4": 4,
}


def ceil_div(a: int, b: int) -> int:
    """Integer ceiling of a / b for non-negative a and positive b."""
    return -(-a // b)


def dtype_bytes(dtype: str) -> int:
    """Whole bytes per element for byte-aligned dtypes (fp32 4, bf16 2, int8 1)."""
    bits = BITS_PER_ELEMENT[dtype]
    if bits % 8:
        raise ValueError(f"{dtype} is not byte-aligned")
    return bits // 8
