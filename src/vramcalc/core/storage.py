"""N fine-tuned copies vs one base model + N LoRA adapters: disk and serving memory. Pure arithmetic.

The deployment argument of shared/seeds/001: full fine-tuning yields a complete model per task
("14 gigabytes of disk space and deployment memory for every single task" for 7B in 16 bits), while
LoRA keeps one frozen base and a small adapter per task (Hu et al. 2021, §4.2: the 350 GB GPT-3
checkpoint vs 35 MB per task). Multi-LoRA servers (vLLM, LoRAX, S-LoRA) load the base once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vramcalc.core.errors import BadInput, UnsupportedCombination
from vramcalc.core.memory.inference import weights as inference_weights
from vramcalc.core.params import count_params, lora_params
from vramcalc.core.specs import ModelSpec, TrainingSpec
from vramcalc.core.units import ceil_div, dtype_bytes
from vramcalc.core.vocab import CLASSIC_FAMILIES


@dataclass(frozen=True, slots=True)
class StorageComparison:
    """Bytes of N full copies and of one base + N adapters (same on disk and, loaded, on the GPU)."""

    model: str
    adapters: int
    parameters: int
    adapter_parameters: int
    model_bytes: int  # one full copy in the serving format
    adapter_bytes: int  # one adapter's tensors
    full_copies_bytes: int
    base_plus_adapters_bytes: int

    @property
    def saved_bytes(self) -> int:
        return self.full_copies_bytes - self.base_plus_adapters_bytes

    @property
    def ratio(self) -> float:
        """How many times smaller base + adapters is than the copies."""
        return self.full_copies_bytes / self.base_plus_adapters_bytes


def compare_storage(model: ModelSpec, training: TrainingSpec, adapters: int) -> StorageComparison:
    """N copies of the model in `training`'s weight format vs that base once + N LoRA adapters of
    `training.lora_rank` on `training.lora_targets`, stored in `training.adapter_dtype`."""
    if adapters < 1:
        raise BadInput("adapters must be at least 1")
    if model.family in CLASSIC_FAMILIES:  # ResNet / LSTM: full training only (memory/classic.py)
        raise UnsupportedCombination(f"storage compares LoRA adapters of transformer Linears; {model.name!r} is a "
                                     f"{model.family} trained in full: its checkpoint is its weights")
    if not model.has_architecture:
        # LoRA's size comes from the adapted Linear layers' shapes (params.lora_params): a bare count has none
        raise UnsupportedCombination(f"storage compares LoRA adapters, whose size comes from the architecture; "
                                     f"{model.name!r} is a parameter count only (see: vramcalc presets new)")
    # One copy: the serving format (weights.py / inference.py rules, quantization constants included).
    one, _, _ = inference_weights(model, replace(training, **{"tp": 1, "pp": 1}))
    n_adapter = (lora_params(model, training.lora_targets, training.lora_rank, training.lora_layers)
                 if model.has_architecture else 0)
    # peft's adapter_model.safetensors holds A (r × in) and B (out × r) per adapted Linear in their dtype.
    adapter = n_adapter * dtype_bytes(training.adapter_dtype)
    return StorageComparison(
        model=model.name, adapters=adapters, parameters=count_params(model), adapter_parameters=n_adapter,
        model_bytes=one, adapter_bytes=adapter, full_copies_bytes=adapters * one,
        base_plus_adapters_bytes=one + adapters * adapter,
    )


def break_even_adapters(c: StorageComparison) -> int:
    """How many adapters weigh as much as one full copy (the base itself excluded)."""
    return ceil_div(c.model_bytes, c.adapter_bytes) if c.adapter_bytes else 0
