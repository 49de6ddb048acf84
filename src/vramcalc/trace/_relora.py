"""axolotl's ReLoRA restart on fake tensors: the merge and the optimizer pruning that run between two steps.

Written from axolotl-ai-cloud/axolotl @ 067b021c src/axolotl/monkeypatch/relora.py (not imported: axolotl is not in
the tracer's venv). ReLoRACallback.on_step_begin, at a restart step, runs under torch.no_grad():
- merge_and_save(model, ..., reinit=True, quantized=False): for each LoRA layer of find_lora_modules (named_modules
  order, names without "lora"), `update = target.get_delta_weight(adapter).detach()` (peft's own: B @ A, then times
  the scaling), `target.weight.data += update` in place, then reset_lora_parameters(adapter, True) for each adapter
  (kaiming_uniform_ on A, zeros_ on B: in place);
- reset_optimizer(optimizer, reset_params=the trainable lora_ parameters, optimizer_state_keys=["exp_avg",
  "exp_avg_sq"]) with magnitude_pruning_ (relora_prune_method's default): |state|, its quantile as the threshold, a
  bool mask and its cast to the state's dtype, multiplied in place. The `.item()` that only counts the zeros is left
  out (a fake tensor has no value).
The Trainer calls on_step_begin after the previous step's zero_grad(set_to_none=True): no gradient is alive.
"""

from __future__ import annotations

from typing import Any

import torch

OPTIMIZER_STATE_KEYS = ("exp_avg", "exp_avg_sq")  # relora.py on_step_begin: an "adam" optim's keys


@torch.no_grad()
def _magnitude_pruning_(tensor: torch.Tensor, prune_ratio: float) -> None:
    """relora.py magnitude_pruning_, step for step."""
    magnitude = torch.abs(tensor)
    threshold = torch.quantile(magnitude.flatten().to(dtype=torch.float32), prune_ratio).to(dtype=tensor.dtype)
    mask = magnitude > threshold
    tensor.mul_(mask.to(dtype=tensor.dtype))


@torch.no_grad()
def restart(model: torch.nn.Module, optimizer: torch.optim.Optimizer, prune_ratio: float = 0.9) -> int:
    """One ReLoRA restart of `model` (a peft LoRA model) and its optimizer; returns the LoRA layers merged."""
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, target in model.named_modules():  # find_lora_modules: LoraLayer modules, names without "lora"
        if "lora" in name or not isinstance(target, LoraLayer):
            continue
        adapter: Any = target.active_adapter
        if isinstance(adapter, list):
            adapter = adapter[0]
        update = target.get_delta_weight(adapter).detach()
        target.weight.data += update
        del update
        for adapter_name in target.lora_A:
            target.reset_lora_parameters(adapter_name, True)
        for adapter_name in target.lora_embedding_A:
            target.reset_lora_parameters(adapter_name, True)
        merged += 1
    lora_params = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    for p in lora_params:
        state = optimizer.state.get(p, {})
        for key in OPTIMIZER_STATE_KEYS:
            value = state.get(key)
            if isinstance(value, torch.Tensor):
                _magnitude_pruning_(value, prune_ratio)
    return merged
