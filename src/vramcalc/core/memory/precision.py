"""What each precision name stores: the dtypes of weights, gradients, optimizer states and compute."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.vocab import PrecisionName


@dataclass(frozen=True, slots=True)
class Recipe:
    """Storage and compute dtypes of one precision setting."""

    weight: str  # dtype of the model's (trainable and frozen) weights
    grad: str  # dtype of gradients (= the parameter's dtype in PyTorch autograd)
    state: str  # dtype of optimizer moments
    compute: str  # dtype of matmul outputs and most activations
    master_weights: bool  # an fp32 copy of trainable weights kept by the optimizer
    autocast: bool  # torch.autocast over an fp32 model: 16-bit copies of weights during forward/backward
    pure: bool  # optimizer states follow the parameter dtype (torch.optim on a 16-bit model)


RECIPES: dict[PrecisionName, Recipe] = {
    # The seed texts' accounting: 16-bit weights and grads, fp32 Adam moments (12 B/param with AdamW).
    "bf16": Recipe("bf16", "bf16", "fp32", "bf16", False, False, False),
    "fp16": Recipe("fp16", "fp16", "fp32", "fp16", False, False, False),
    # torch.optim.AdamW on a bf16 model: states are zeros_like(param), so bf16 (torch/optim/adamw.py).
    "pure-bf16": Recipe("bf16", "bf16", "bf16", "bf16", False, False, True),
    "pure-fp16": Recipe("fp16", "fp16", "fp16", "fp16", False, False, True),
    # DeepSpeed/Megatron mixed precision: 16-bit params and grads, fp32 master + fp32 moments
    # (ZeRO paper, Rajbhandari et al. 2020 §3.1: 2 + 2 + 12 bytes per parameter with Adam).
    "mixed-bf16": Recipe("bf16", "bf16", "fp32", "bf16", True, False, False),
    "mixed-fp16": Recipe("fp16", "fp16", "fp32", "fp16", True, False, False),
    # torch.autocast on an fp32 model (HF Trainer bf16=True on an fp32 load): fp32 everything stored,
    # 16-bit compute with cached weight casts (torch/csrc/autograd/autocast_mode.cpp cached_cast).
    "amp-bf16": Recipe("fp32", "fp32", "fp32", "bf16", False, True, False),
    "amp-fp16": Recipe("fp32", "fp32", "fp32", "fp16", False, True, False),
    "fp32": Recipe("fp32", "fp32", "fp32", "fp32", False, False, False),
}
