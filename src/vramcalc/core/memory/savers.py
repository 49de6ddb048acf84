"""Activation-checkpointing variants: which layers keep what on the GPU, and what goes to host RAM.

* per-layer checkpointing (HF gradient_checkpointing_enable, torchtune ac_mode "full"): every layer keeps
  only its input; one layer is recomputed at a time in backward (memory/__init__.py phase model).
* selective (torchtune training/activations.py checkpoint_wrapper, ac_mode "selective", ac_option k): a
  layer is wrapped when its 1-based index is a multiple of k, so n_layers // k layers keep their input
  and the others keep their whole saved set.
* offloaded (torchtune training/_activation_offloading.py OffloadActivations, enable_activation_offloading;
  Unsloth's "unsloth" checkpointing and axolotl `gradient_checkpointing: offload` offload the checkpointed
  inputs the same way): saved tensors of at least 1 KiB are copied to pinned host memory in forward;
  the GPU keeps them only in a 5-tensor stash (the final norm's, at the loss) and, in backward, brings
  back one node's tensors at a time: with checkpointing, the input of the layer being recomputed, and
  without it, the saved set of the layer running backward.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Residency:
    """Bytes of the layers' saved activations on the GPU in forward and in backward, and in host RAM."""

    forward: int
    backward: int
    host: int


def layer_residency(*, n_layers: int, saving_layers: int, checkpointing: bool, every: int, offload: bool,
                    per_layer: int, layer_input: int) -> Residency:
    """What the `saving_layers` layers keep (bytes), given one layer's saved set and its input."""
    if checkpointing:
        wrapped = min(n_layers // every, saving_layers)
        resident = wrapped * layer_input + (saving_layers - wrapped) * per_layer
    else:
        resident = saving_layers * per_layer
    if not offload:
        return Residency(resident, resident, 0)
    back = layer_input if checkpointing and saving_layers else 0
    return Residency(0, back, resident)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def largest_tensor(trainable_tensors: tuple[tuple[tuple[int, ...], int], ...]) -> int:
    """Elements of the largest trainable tensor."""
    return max((_numel(shape) for shape, _ in trainable_tensors), default=0)


# Optimizer in backward (torchtune training/_optimizer_wrapper / memory.py register_optim_in_bwd_hooks,
# optimizer_in_bwd: true; torch.optim._apply_optimizer_in_backward): each parameter has its own optimizer,
# stepped and zeroed (set_to_none) by a post-accumulate-grad hook, so only the gradient of the tensor being
# stepped exists, with that one tensor's step temporaries; there is no full gradient buffer and no
# separate optimizer-step phase. The core uses: gradients = the largest tensor's gradient, step
# temporaries = those of the largest tensor alone (memory/optimizer.py with trainable = largest).
