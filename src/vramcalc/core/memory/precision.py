"""What each precision name stores: the dtypes of weights, gradients, optimizer states and compute."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import TrainingSpec
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
    # torch.autocast over 16-bit stored weights with fp32 trainable parameters (memory/upcast_norms.py autocast16)
    autocast16: bool = False


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
    # The Trainer's bf16 / fp16 flag over a 16-bit load whose trainable parameters are fp32 (peft's adapters with
    # autocast_adapter_dtype, LLaMA-Factory's cast_trainable_params_to_fp32): 16-bit frozen weights, fp32 adapters /
    # trained layers with fp32 grads and states, the step under torch.autocast (transformers trainer.py
    # autocast_smart_context_manager leaves it to accelerate; accelerate accelerator.py prepare_model wraps forward in
    # autocast_context when native_amp). No weight casts are cached for the frozen 16-bit weights.
    "autocast-bf16": Recipe("bf16", "bf16", "fp32", "bf16", False, False, False, True),
    "autocast-fp16": Recipe("fp16", "fp16", "fp32", "fp16", False, False, False, True),
    "fp32": Recipe("fp32", "fp32", "fp32", "fp32", False, False, False),
}


def resolve_precision(t: TrainingSpec) -> PrecisionName:
    """The precision a run uses: --precision, or for `auto` what the engine does.

    DeepSpeed ZeRO with bf16 enabled wraps the optimizer in BF16_Optimizer (runtime/bf16_optimizer.py) or
    the ZeRO optimizer with fp32 partitions of the 16-bit params (stage_1_and_2.py
    single_partition_of_fp32_groups; stage3.py fp32_partitioned_groups_flat): fp32 master weights. FSDP with
    MixedPrecision(param_dtype=bf16) keeps the sharded parameters in fp32 and casts them to bf16 for compute,
    the same 16 B per parameter with AdamW. So `auto` is mixed-bf16 for a ZeRO/FSDP training run and bf16
    (the seed texts' 16-bit weights, fp32 moments: 12 B/param with AdamW) otherwise.
    """
    if t.precision != "auto":
        return t.precision
    if t.mode == "train" and (t.zero or t.fsdp != "none" or getattr(t, "badam", False)):
        return "mixed-bf16"  # BAdam: a 16-bit model, an fp32 copy and moments of the active block (memory/badam.py)
    return "bf16"


def recipe_of(t: TrainingSpec) -> Recipe:
    """The storage and compute dtypes of `t` (its precision resolved)."""
    return RECIPES[resolve_precision(t)]


def auto_precision_note(t: TrainingSpec) -> str | None:
    """What `--precision auto` chose when it is not the plain bf16 default."""
    if t.precision != "auto" or resolve_precision(t) == "bf16":
        return None
    if getattr(t, "badam", False):
        return ("precision auto → mixed-bf16: BAdam steps an fp32 copy of the active block's 16-bit weights, with "
                "fp32 moments (badam block_optim.py).")
    engine = f"DeepSpeed ZeRO-{t.zero}" if t.zero else f"FSDP {t.fsdp}"
    return (f"precision auto → mixed-bf16: {engine} mixed precision keeps fp32 master weights (16 B/param with "
            "AdamW before sharding); pass --precision bf16 for 16-bit weights without them.")
