"""Live-storage accounting under FakeTensorMode: a TorchDispatchMode that sees every allocation.

Each storage an op returns is recorded once (views share storage), rounded up to 512 bytes as the
CUDA caching allocator does (c10/cuda/CUDACachingAllocator.cpp: kMinBlockSize = 512,
round_size()), and forgotten when a weakref on its UntypedStorage fires. Storages keep a category
that starts from the phase that created them and is moved to `gradients` / `optimizer_state` when
the tensor becomes a `.grad` or an optimizer state. The same scheme as
torch.distributed._tools.mem_tracker.MemTracker, which we do not reuse because it keys its
categories on module hooks and does not know optimizer-state or gradient ownership mid-backward.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# c10/cuda/CUDACachingAllocator.cpp: constexpr size_t kMinBlockSize = 512; round_size() rounds every
# request up to a multiple of it (a zero-byte request allocates nothing).
CUDA_BLOCK_BYTES = 512

CATEGORIES = ("parameters", "buffers", "gradients", "optimizer_state", "activations", "temporaries")
PHASES = ("forward", "backward", "optimizer_step")
_PHASE_CATEGORY = {"setup": "temporaries", "forward": "activations", "backward": "temporaries",
                   "optimizer_step": "temporaries"}


def cuda_rounded_bytes(nbytes: int) -> int:
    """Bytes the CUDA caching allocator hands out for a request of `nbytes`."""
    if nbytes <= 0:
        return 0
    return -(-nbytes // CUDA_BLOCK_BYTES) * CUDA_BLOCK_BYTES


@dataclass
class _Entry:
    nbytes: int
    category: str
    seq: int  # allocation order: an entry alive now with seq <= the peak's was alive at the peak


@dataclass
class PeakRecord:
    total_bytes: int = 0
    phase: str = "forward"
    by_category: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    op: str = ""


class MemoryTracker(TorchDispatchMode):
    """Counts live (rounded) storage bytes by category; records the global and per-phase peaks."""

    def __init__(self) -> None:
        super().__init__()
        self._entries: dict[int, _Entry] = {}
        self._refs: dict[int, weakref.ref[Any]] = {}
        self.current: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        self.total_bytes = 0
        self.phase = "setup"
        self.recording = False
        self.peak = PeakRecord()
        self.phase_peaks: dict[str, int] = dict.fromkeys(PHASES, 0)
        self._alloc_seq = 0
        self._peak_seq = -1

    # -- storage bookkeeping -------------------------------------------------------------------
    def _key(self, st: torch.UntypedStorage) -> int:
        return int(st._cdata)

    def track(self, t: torch.Tensor, category: str | None = None) -> None:
        """Record the storage of `t` (once); `category` defaults to the current phase's."""
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        st = t.untyped_storage()
        key = self._key(st)
        if key in self._entries:
            if category is not None:
                self.recategorize(t, category)
            return
        self._alloc_seq += 1
        entry = _Entry(cuda_rounded_bytes(st.nbytes()), category or _PHASE_CATEGORY[self.phase], self._alloc_seq)
        self._entries[key] = entry
        self._refs[key] = weakref.ref(st, lambda _r, k=key: self._release(k))
        self.current[entry.category] += entry.nbytes
        self.total_bytes += entry.nbytes

    def _release(self, key: int) -> None:
        entry = self._entries.pop(key, None)
        self._refs.pop(key, None)
        if entry is not None:
            self.current[entry.category] -= entry.nbytes
            self.total_bytes -= entry.nbytes

    def forget(self, t: torch.Tensor) -> None:
        """Stop counting `t`'s storage (a tensor that lives on the host in a CUDA run)."""
        key = self._key(t.untyped_storage())
        entry = self._entries.get(key)
        if entry is not None:
            self.current[entry.category] -= entry.nbytes
            self.total_bytes -= entry.nbytes
            entry.nbytes = 0

    def recategorize(self, t: torch.Tensor, category: str) -> None:
        """Move `t`'s storage to `category` (e.g. a new `.grad`), also in a peak taken at the last op."""
        entry = self._entries.get(self._key(t.untyped_storage()))
        if entry is None:
            self.track(t, category)
            return
        if entry.category == category:
            return
        old = entry.category
        self.current[old] -= entry.nbytes
        self.current[category] += entry.nbytes
        entry.category = category
        if entry.seq <= self._peak_seq:
            # Alive now and allocated before the peak, so alive at the peak: attribute it there too.
            self.peak.by_category[old] -= entry.nbytes
            self.peak.by_category[category] += entry.nbytes

    def category_of(self, t: torch.Tensor) -> str | None:
        entry = self._entries.get(self._key(t.untyped_storage()))
        return None if entry is None else entry.category

    def live_storages(self) -> int:
        return len(self._entries)

    # -- peaks -----------------------------------------------------------------------------------
    def reset_peaks(self) -> None:
        self.peak = PeakRecord(self.total_bytes, self.phase, dict(self.current))
        self.phase_peaks = dict.fromkeys(PHASES, 0)
        self._peak_seq = self._alloc_seq

    def _update_peaks(self, op: str) -> None:
        if not self.recording:
            return
        total = self.total_bytes
        if self.phase in self.phase_peaks and total > self.phase_peaks[self.phase]:
            self.phase_peaks[self.phase] = total
        if total > self.peak.total_bytes:
            self.peak = PeakRecord(total, self.phase, dict(self.current), op)
            self._peak_seq = self._alloc_seq

    @contextmanager
    def in_phase(self, phase: str) -> Iterator[None]:
        old, self.phase = self.phase, phase
        try:
            if self.recording and phase in self.phase_peaks:
                self.phase_peaks[phase] = max(self.phase_peaks[phase], self.total_bytes)
            yield
        finally:
            self.phase = old

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)
        self._update_peaks(str(func))
        return out


def tensors_of(objs: Iterable[Any]) -> Iterator[torch.Tensor]:
    for o in objs:
        for t in tree_flatten(o)[0]:
            if isinstance(t, torch.Tensor):
                yield t


Factory = Callable[[], Any]
