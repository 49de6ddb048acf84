"""axolotl's ReLoRA restarts (`relora: true` with `jagged_restart_steps`): the merge moment between two steps.

axolotl-ai-cloud/axolotl @ 067b021c src/axolotl/monkeypatch/relora.py: ReLoRACallback.on_step_begin, at every
jagged_restart_steps-th step, runs under torch.no_grad() (after the previous step's zero_grad(set_to_none=True), so
no gradient and no activation is alive; the weights and the optimizer states are):
- merge_and_save(quantized=False): for each LoRA layer, `update = target.get_delta_weight(adapter)`, which is peft's
  tuners/lora/layer.py Linear.get_delta_weight: `transpose(weight_B @ weight_A) * scaling`, two full-size out x in
  tensors in the adapter's dtype alive at once (the product and its scaled copy); then `target.weight.data +=
  update` in place and the adapters re-initialized in place (reset_lora_parameters). One layer at a time: the largest
  adapted layer's pair is the merge's peak.
- reset_optimizer with magnitude_pruning_ (relora_prune_method's default) on each LoRA parameter's exp_avg and
  exp_avg_sq: |state| (kept to the end), its fp32 quantile (torch.quantile sorts a copy: the sorted values and their
  int64 indices), then a bool mask and its cast to the state's dtype. The largest LoRA parameter's state is its peak.
The restart is a moment of the forward phase (before the step's first forward): `forward.relora_merge`.

A 4-bit model is refused: merge_and_save's update_weights sets the merged weight's data and calls target.to(device),
but bitsandbytes 0.50 Params4bit.to requantizes only when bnb_quantized is unset, and it stays set: the layer keeps an
unquantized (out, in) weight and its next forward fails fix_4bit_weight_quant_state_from_module's shape assertion
(checked on the CPU with bitsandbytes 0.50.2). Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vramcalc.core.params import layer_linears, outer_targets
from vramcalc.core.units import dtype_bytes

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import ModelSpec, TrainingSpec

SOURCE = "axolotl @ 067b021c monkeypatch/relora.py merge_and_save, reset_optimizer; peft Linear.get_delta_weight"
STATE_BYTES = 4  # torch AdamW's exp_avg / exp_avg_sq: fp32 (torch/optim/adamw.py _init_group, zeros_like(p) of an
# fp32 adapter; --relora is modelled with --optimizer adamw and fp32 adapters only, specs.py)
# magnitude_pruning_ per state element, at torch.quantile's sort: |state| (4) + the sorted fp32 copy (4) + the sort's
# int64 indices (8); afterwards |state| + the bool mask (1) + its fp32 cast (4) is less.
PRUNE_BYTES_PER_ELEMENT = 16


def _shapes(model: ModelSpec, training: TrainingSpec) -> list[tuple[int, int]]:
    """(out, in) of every adapted layer: the block Linears (params.layer_linears) and an adapted embedding / head
    (vocab x hidden either way: get_delta_weight's B @ A)."""
    shapes = [(lin.out_features, lin.in_features)
              for lin in layer_linears(model, training.lora_targets, training.lora_layers) if lin.count]
    v, h = model.vocab_size or 0, model.hidden_size or 0
    shapes += [(v, h) for _ in outer_targets(training.lora_targets)]
    return shapes


def merge_bytes(model: ModelSpec, training: TrainingSpec) -> int:
    """The largest adapted layer's B @ A and its scaled copy, in the adapter dtype (get_delta_weight)."""
    a = dtype_bytes(training.adapter_dtype)
    return max((2 * o * i * a for o, i in _shapes(model, training)), default=0)


def prune_bytes(model: ModelSpec, training: TrainingSpec) -> int:
    """magnitude_pruning_ on the largest LoRA parameter's state (A: r x in, B: out x r)."""
    r = training.lora_rank
    largest = max((r * max(o, i) for o, i in _shapes(model, training)), default=0)
    return PRUNE_BYTES_PER_ELEMENT * largest


def restart_bytes(model: ModelSpec, training: TrainingSpec) -> int:
    """What the restart allocates beyond the weights and optimizer states at its peak."""
    return max(merge_bytes(model, training), prune_bytes(model, training))


def note(model: ModelSpec, training: TrainingSpec) -> str:
    return ("ReLoRA (axolotl relora): each restart, before a step, merges one LoRA layer at a time (peft "
            "get_delta_weight: B @ A and its scaled copy, the largest layer's "
            f"{merge_bytes(model, training):,} B) and prunes the Adam states in place; no gradient or activation "
            "is alive then (forward.relora_merge)")
