"""The memory savers ranked by what each saves for the run at hand: one estimate per saver (fit's list).

Each candidate is one change of the run's options (a loss kernel, checkpointing, offload, an 8-bit
optimizer, ...); it is estimated like any run and kept when it lowers the peak. Standard library only:
which stacks offer a saver is io/stacks.py's answer, passed in by the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vramcalc.core.errors import VramcalcError

if TYPE_CHECKING:
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# (changes) candidates, each a saver the stacks' presets can offer (presets/stacks/*.yaml `offers`).
CANDIDATES: tuple[dict[str, Any], ...] = (
    {"loss": "cut"},
    {"loss": "fused-linear"},
    {"loss": "chunked"},
    {"loss": "linear-chunked"},
    {"loss": "liger-cross-entropy"},
    {"grad_checkpointing": True},
    {"grad_checkpointing": True, "activation_offload": True},
    {"optimizer_in_bwd": True},
    # torchtune's per-layer torch.compile (memory/compiled.py): kept where it is modelled and lowers the peak
    {"compile": True, "compile_scope": "layers"},
    {"optimizer": "adamw-8bit"},
    {"optimizer": "torchao-adamw-4bit"},
    # LLaMA-Factory use_muon (memory/optimizer.py muon_bytes): one state instead of AdamW's two on the 2-D matrices,
    # for a bf16 Newton-Schulz step of the largest one; kept only where that lowers the peak (full or freeze)
    {"optimizer": "muon"},
    {"attention": "flash"},
    {"kernels": "unsloth"},
    {"kernels": "liger"},
    {"kernels": "axolotl:qkv,o,mlp"},
)
_ADAMW = ("adamw", "paged-adamw")  # the 8-/4-bit states replace AdamW's 32-bit ones only


@dataclass(frozen=True)
class SaverGain:
    """One saver applied to the run: the options it changes, the new peak, what it saves, who offers it."""

    changes: dict[str, Any]
    peak_bytes: int
    saved_bytes: int
    stacks: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"changes": dict(self.changes), "peak_bytes": self.peak_bytes, "saved_bytes": self.saved_bytes,
                "stacks": list(self.stacks)}


def rank_savers(model: ModelSpec, training: TrainingSpec, peak_bytes: int,
                offered_by: Callable[[str, Any], tuple[str, ...]]) -> list[SaverGain]:
    """Every candidate saver not already in use that lowers `peak_bytes`, largest saving first.

    `offered_by(option, value)` names the stacks offering a change (the last option of the change: the
    saver itself, e.g. activation_offload for checkpointing + offload).
    """
    from vramcalc.core.memory import estimate

    if training.mode != "train":
        return []
    out: list[SaverGain] = []
    for change in CANDIDATES:
        if all(getattr(training, k) == v for k, v in change.items()):
            continue  # already in use
        if "optimizer" in change and training.optimizer not in _ADAMW:
            continue
        try:
            peak = estimate(model, replace(training, **change)).peak_bytes
        except VramcalcError:  # a saver this run cannot take (e.g. optimizer in backward with accumulation)
            continue
        if peak < peak_bytes:
            option, value = list(change.items())[-1]
            out.append(SaverGain(dict(change), peak, peak_bytes - peak, offered_by(option, value)))
    out.sort(key=lambda g: (-g.saved_bytes, len(g.changes)))
    return out
