"""The verdict: does a step's peak fit in a GPU's memory, and by how much."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vramcalc.core.memory import Breakdown

if TYPE_CHECKING:  # annotations only: the core runs without importing pydantic
    from vramcalc.core.specs import GpuSpec


@dataclass(frozen=True, slots=True)
class Verdict:
    """FITS or DOES NOT FIT on one GPU, with the headroom (negative: the shortfall) in bytes."""

    gpu: GpuSpec
    needed_bytes: int
    headroom_bytes: int
    gpus: int = 1  # the estimate is per GPU; how many GPUs the run spans

    @property
    def fits(self) -> bool:
        return self.headroom_bytes >= 0

    @property
    def status(self) -> str:
        return "FITS" if self.fits else "DOES NOT FIT"


def fit(breakdown: Breakdown, gpu: GpuSpec) -> Verdict:
    """Compare the step's peak (tensors + runtime overhead) with the GPU's total memory."""
    needed = breakdown.peak_bytes
    layout = breakdown.parallelism or {}
    gpus = int(layout.get("world_size", 1))
    return Verdict(gpu=gpu, needed_bytes=needed, headroom_bytes=gpu.memory_bytes - needed, gpus=gpus)


def precision_note(gpu: GpuSpec, precision: str) -> str | None:
    """A warning when the run computes in bf16 on a GPU without bf16 support (pre-Ampere NVIDIA)."""
    if gpu.bf16 or ("bf16" not in precision and precision != "auto"):  # auto is bf16 or mixed-bf16
        return None
    return (f"{gpu.display_name} has no bf16 support: use fp16 variants "
            "(--precision fp16 / mixed-fp16 / amp-fp16).")
