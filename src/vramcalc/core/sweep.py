"""Peak memory against one option (batch size, sequence length, LoRA rank), for `fit --plot`. Pure: no I/O.

The values are powers of two up to twice the largest that fits (or the option's cap), plus the largest
that fits and the run's own value, so the boundary found by solve.py is one of the points drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

from vramcalc.core.searches import MAX_BATCH_SIZE, Estimator, largest_fitting, rank_cap, seq_cap, with_changes
from vramcalc.core.specs import ModelSpec, TrainingSpec

# CLI name -> TrainingSpec field
AXES = {"batch-size": "batch_size", "seq-len": "seq_len", "lora-rank": "lora_rank"}
MAX_POINTS = 24  # more doublings than this add columns nobody reads


@dataclass(frozen=True)
class Sweep:
    """`peaks[i]` is the peak (tensors + overhead) with the option at `values[i]`."""

    field: str
    values: tuple[int, ...]
    peaks: tuple[int, ...]
    largest: int | None  # the largest value that fits `capacity_bytes` (exact; None: not even the first)
    capacity_bytes: int


def axis_cap(model: ModelSpec, field: str) -> int:
    """The search cap of solve.py for `field`."""
    if field == "batch_size":
        return MAX_BATCH_SIZE
    if field == "seq_len":
        return seq_cap(model)
    return rank_cap(model) or 1


def sweep_values(current: int, largest: int | None, cap: int) -> list[int]:
    """Powers of two from 1 up to twice max(largest, current) (within `cap`), with `largest` and `current`."""
    stop = min(cap, 2 * max(largest or 1, current, 4))
    values = {1 << k for k in range(stop.bit_length()) if 1 << k <= stop}
    values |= {v for v in (largest, current) if v is not None and v <= cap}
    ordered = sorted(values)
    if len(ordered) > MAX_POINTS:  # keep the top: the boundary and the run are at the high end
        keep = {v for v in (largest, current) if v is not None}
        ordered = sorted(keep | set(ordered[-MAX_POINTS + len(keep):]))
    return ordered


def sweep(model: ModelSpec, training: TrainingSpec, field: str, capacity_bytes: int) -> Sweep:
    """Peaks over `field`'s values and the largest value that fits `capacity_bytes` (solve.largest_fitting)."""
    est = Estimator(model)

    def peak_of(v: int) -> int:
        return est.peak(with_changes(training, {field: v}))

    cap = axis_cap(model, field)
    largest = largest_fitting(peak_of, capacity_bytes, cap)
    values = sweep_values(getattr(training, field), largest, cap)
    return Sweep(field, tuple(values), tuple(peak_of(v) for v in values), largest, capacity_bytes)
