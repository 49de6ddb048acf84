"""transformers' offloaded checkpointing on the fake device: torch's save_on_cpu around each checkpoint, memory only.

transformers 5.24 modeling_utils.py PreTrainedModel._activation_checkpointing_enable(offload=True) wraps every
checkpoint call in `torch.autograd.graph.save_on_cpu(pin_memory=True, device_type=...)`. Those hooks see only what
the checkpoint saves under the *outer* hooks: with use_reentrant=False, torch utils/checkpoint.py
_NoopSaveInputs.apply saves the layer's tensor inputs (the layer's own saved tensors go to the checkpoint's
holders, its inner _checkpoint_hook); with use_reentrant=True, CheckpointFunction.forward's ctx.save_for_backward.
`pack_to_cpu` copies each such tensor into a new pinned host tensor of its size (`torch.empty(tensor.size(), ...,
pin_memory=...)` and `copy_`: a view comes back as its own elements, contiguous) and lets go of the GPU tensor;
`unpack_from_cpu` returns `tensor.to(device, non_blocking=True)`, a new GPU tensor per unpack (torch
autograd/graph.py save_on_cpu). On the fake device everything is a `cpu` tensor, where `.to` would be a no-op, so
the module's `save_on_cpu` is swapped for hooks that keep only the size in "host RAM" (not counted) and make a new
tensor at each unpack (counted); transformers' own checkpoint_func, every_n_layers and wrapping run unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

# pinned host bytes now and at their peak, over the trace (the note the tracer adds)
HOST = {"now": 0, "peak": 0}


class SaveOnCpuEmulation(torch.autograd.graph.saved_tensors_hooks):
    """saved_tensors_hooks with save_on_cpu's allocations: nothing kept on the device, a new copy per unpack."""

    def __init__(self, pin_memory: bool = False, device_type: str = "cuda") -> None:
        del pin_memory, device_type  # (the fake device is the host; the sizes are what matter)

        def pack(t: torch.Tensor) -> Any:
            nbytes = t.element_size() * t.nelement()
            HOST["now"] += nbytes
            HOST["peak"] = max(HOST["peak"], HOST["now"])
            return _HostCopy(t.size(), t.dtype, nbytes)

        def unpack(packed: _HostCopy) -> torch.Tensor:
            return torch.empty(packed.shape, dtype=packed.dtype)  # `.to(device)`: a new contiguous device tensor

        super().__init__(pack, unpack)


class _HostCopy:
    """The pinned host tensor: its bytes leave host RAM when autograd drops it (the graph freed)."""

    def __init__(self, shape: torch.Size, dtype: torch.dtype, nbytes: int) -> None:
        self.shape, self.dtype, self.nbytes = shape, dtype, nbytes

    def __del__(self) -> None:
        HOST["now"] -= self.nbytes


@contextlib.contextmanager
def emulation() -> Iterator[None]:
    """transformers' checkpoint_func looks `save_on_cpu` up in modeling_utils at each call: swap it for the trace."""
    from transformers import modeling_utils

    real = modeling_utils.save_on_cpu
    HOST.update(now=0, peak=0)
    modeling_utils.save_on_cpu = SaveOnCpuEmulation  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        modeling_utils.save_on_cpu = real  # type: ignore[misc]
