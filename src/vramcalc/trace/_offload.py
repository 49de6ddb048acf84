"""Activation offloading on the fake device: torchtune's OffloadActivations, memory only.

torchtune/training/_activation_offloading.py OffloadActivations (use_streams=True, max_fwd_stash_size=5,
min_offload_size=1024) is a saved_tensors_hooks pair: in forward every saved tensor of at least 1024
bytes that is not a parameter is copied to pinned host memory, and the GPU tensor is kept in a stash
until 5 newer tensors have been packed (so the copy stream can finish); in backward each offloaded
tensor is copied back to a new GPU tensor when its node unpacks it. The copies of a node are dropped
by a post hook of the *next* node that unpacks an offloaded tensor (unpack_tensor_with_streams: the first
unpack on a new node lists the stash as prev_node_ids, and `hook`, registered with node.register_hook,
deletes them after that node has run), so while a node runs its own copies and the previous node's are
on the GPU; the forward stash goes in the same hook. (pytorch/torchtune torchtune/training/
_activation_offloading.py at 05cda5e9dd03be9460f624ebbdbaacc15983e6a3.) It needs CUDA streams, so this class
reproduces the allocations: the host copies are not counted (they live in host RAM), the stash and the
copies back are.
torchtune applies it around the decoder (the output projection runs under NoOpManager), so the caller
enters it for the model body only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch._prims_common import is_non_overlapping_and_dense_or_false, make_contiguous_strides_for

MIN_OFFLOAD_BYTES = 1024
FWD_STASH = 5


class OffloadEmulation(torch.autograd.graph.saved_tensors_hooks):
    """saved_tensors_hooks that account for what torchtune's OffloadActivations keeps on the GPU."""

    def __init__(self) -> None:
        self.next_id = 0
        self.fwd_stash: dict[int, torch.Tensor] = {}
        self.offloaded: dict[int, tuple[torch.Size, tuple[int, ...], torch.dtype]] = {}
        self.bwd_stash: dict[int, torch.Tensor] = {}
        self.node: Any = None
        self.host_bytes = 0  # pinned host memory of one forward (peak)
        self._host_now = 0

        def pack(t: torch.Tensor) -> Any:
            self.next_id += 1
            tid = self.next_id
            nbytes = t.element_size() * t.nelement()
            if nbytes < MIN_OFFLOAD_BYTES or isinstance(t, nn.Parameter):
                return ("kept", t)
            for old in [k for k in self.fwd_stash if k <= tid - FWD_STASH]:
                del self.fwd_stash[old]
            # the host copy is `torch.empty_like(activation, device="cpu")`: a view that is not dense (a chunk of
            # transformers' fused experts gate_up output, integrations/moe.py _default_apply_gate; GPT-2's split
            # c_attn) is copied contiguous, so `.to(device)` brings back its own elements, not its base's storage
            stride = t.stride() if is_non_overlapping_and_dense_or_false(t) else make_contiguous_strides_for(t.shape)
            self.offloaded[tid] = (t.shape, tuple(stride), t.dtype)
            self.fwd_stash[tid] = t
            self._host_now += nbytes
            self.host_bytes = max(self.host_bytes, self._host_now)
            return ("offloaded", tid)

        def unpack(packed: Any) -> torch.Tensor:
            kind, value = packed
            if kind == "kept":
                return value  # type: ignore[no-any-return]
            if self.node is None:  # first unpack of this backward: clean up when the engine finishes
                torch.autograd.Variable._execution_engine.queue_callback(self.end_of_backward)
            node = torch._C._current_autograd_node()
            if node is not self.node:  # a new node: the previous node's copies go once this node has run
                self.node = node
                prev = list(self.bwd_stash)

                def drop(*_: Any) -> None:
                    for k in prev:
                        self.bwd_stash.pop(k, None)
                    self.fwd_stash.clear()

                node.register_hook(drop)
            if value in self.fwd_stash:
                return self.fwd_stash[value]
            shape, stride, dtype = self.offloaded.pop(value)
            self._host_now -= torch.empty((), dtype=dtype).element_size() * shape.numel()
            gpu = torch.empty_strided(shape, stride, dtype=dtype)
            self.bwd_stash[value] = gpu
            return gpu

        super().__init__(pack, unpack)

    def end_of_backward(self) -> None:
        """wait_and_del_remaining_references: the engine's final callback drops what is left."""
        self.bwd_stash.clear()
        self.fwd_stash.clear()
        self.node = None


def install(body: nn.Module) -> OffloadEmulation:
    """Offload the saved tensors of `body`'s forward (enter before it, leave after it)."""
    ctx = OffloadEmulation()

    def enter(*_: Any) -> None:
        ctx.__enter__()

    def leave(*_: Any) -> None:
        ctx.__exit__(None, None, None)

    body.register_forward_pre_hook(enter)
    body.register_forward_hook(leave)
    return ctx
