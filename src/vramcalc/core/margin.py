"""The verdict with a margin: FITS, TIGHT or DOES NOT FIT. Pure: no I/O.

TIGHT means the estimate fits, but by less than the margin, so an estimator error of that size would
turn it into an out-of-memory error. The margin is relative to the estimated peak: a 5 % margin asks
for headroom of at least 5 % of the estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from vramcalc.core.errors import BadInput
from vramcalc.core.units import ceil_div

Status = Literal["FITS", "TIGHT", "DOES NOT FIT"]

# Default margin: the estimator's measured error band. On every traced grid of benchmarks/accuracy.py the tensor
# peak is never more than 2.00 % under the tracer's (the savers grid's TinyLlama QLoRA with Cut CE and offloaded
# checkpointing; the largest |error| is 4.89 %, an over-estimate: --grid hybrid, Falcon-H1 full with
# checkpointing; the 64-case base grid: max 1.37 %, median 0.01 %, benchmarks/results/accuracy*.md), so 7 % of the
# peak covers the dangerous direction. The tracer reproduces CUDA's allocations on fake tensors; no real-GPU runs
# are checked in, so the runtime overhead row stays an approximation.
# `--margin` overrides the default and the JSON says which one was used.
DEFAULT_MARGIN_FRACTION = 0.07
MARGIN_SOURCE_DEFAULT = "default: the estimator's error band measured against the tracer, at most 2.00 % under"


@dataclass(frozen=True, slots=True)
class Margin:
    """A margin as a fraction of the estimated peak, and where it came from."""

    fraction: float = DEFAULT_MARGIN_FRACTION
    source: str = MARGIN_SOURCE_DEFAULT

    def bytes_for(self, needed_bytes: int) -> int:
        """Margin in bytes for a peak of `needed_bytes` (rounded up)."""
        # Fractions are given to at most 6 decimals; work in millionths to stay in integers.
        return ceil_div(needed_bytes * round(self.fraction * 1_000_000), 1_000_000)

    def largest_peak(self, capacity_bytes: int) -> int:
        """The largest peak that still leaves this margin on `capacity_bytes`: classify() says FITS at it, TIGHT one
        byte above. fit's limits use it when --margin is given (a user asking for headroom gets limits that keep it)."""
        n = capacity_bytes * 1_000_000 // (1_000_000 + round(self.fraction * 1_000_000))
        while n + 1 + self.bytes_for(n + 1) <= capacity_bytes:  # the division's rounding against bytes_for's ceiling
            n += 1
        while n > 0 and n + self.bytes_for(n) > capacity_bytes:
            n -= 1
        return n

    def describe(self) -> str:
        """`7 % of the peak; default: ...`, for the verdict line and table footers.

        No parentheses: the verdict line puts this in its own `(margin: ...)` (issue 12: three levels).
        """
        return f"{self.fraction * 100:g} % of the peak; {self.source}"

    def doc(self, needed_bytes: int | None) -> dict[str, object]:
        """The JSON `margin` object: fraction, bytes for this peak, and where the margin came from."""
        return {"fraction": self.fraction,
                "bytes": None if needed_bytes is None else self.bytes_for(needed_bytes), "source": self.source}


def classify(needed_bytes: int, capacity_bytes: int, margin: Margin) -> Status:
    """FITS when headroom ≥ the margin, TIGHT when it fits with less, else DOES NOT FIT."""
    headroom = capacity_bytes - needed_bytes
    if headroom < 0:
        return "DOES NOT FIT"
    if headroom < margin.bytes_for(needed_bytes):
        return "TIGHT"
    return "FITS"


def parse_margin(text: str) -> Margin:
    """`5%` or `0.05` (a fraction); a bare number ≥ 1 is refused as ambiguous."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            fraction = float(raw[:-1]) / 100
        else:
            fraction = float(raw)
            if fraction >= 1:
                raise ValueError
        if not math.isfinite(fraction):
            raise ValueError
    except ValueError:
        raise BadInput(
            f"--margin {text!r} is not a margin; write a percentage like 5% or a fraction like 0.05"
        ) from None
    if not 0 <= fraction < 1:
        raise BadInput(f"--margin {text!r} is out of range; use 0% to 99%")
    return Margin(fraction=fraction, source=f"--margin {raw}")


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


# A bare number below a megabyte is almost surely meant in GB: no GPU has 24 bytes.
BARE_BYTES_MIN = 10**6


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """`20GB` (10^9), `24GiB` (2^30), `512MiB`, or plain bytes, as an int (`flag` names the option in errors)."""
    raw = text.strip().replace(" ", "").replace("_", "")
    i = len(raw)
    while i and raw[i - 1].isalpha():
        i -= 1
    number, unit = raw[:i], raw[i:].lower()
    try:
        value = float(number)
        scale = _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise BadInput(
            f"{flag} {text!r} is not a size; write e.g. 20GB, 24GiB or 80000000000"
        ) from None
    if not math.isfinite(value) or value * scale >= 2**63:
        raise BadInput(f"{flag} {text!r} is not a finite size; write e.g. 20GB or 24GiB")
    if scale == 1 and not unit and 0 < value < BARE_BYTES_MIN:
        # `--max-memory 24` means 24 GB to a person and 24 bytes to a parser: refuse it rather than guess
        raise BadInput(f"{flag} {text!r} has no unit; write {number}GB (10^9) or {number}GiB (2^30)")
    size = int(value * scale)
    if size <= 0:
        raise BadInput(f"{flag} {text!r} must be positive")
    return size
