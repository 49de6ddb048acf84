"""Resource ceilings on every generated input (issue 19: "no run over 5 s of CPU or 1 GB").

conftest.py wraps each hypothesis test's inner function with `measured`, so every input any property or
fuzz test draws is held to the ceilings, and the one that passes a ceiling fails its test with the input
named (hypothesis then prints the falsifying example). These are guards against hangs and blow-ups, not
speed targets: inputs take milliseconds, and the ceilings are two to three orders of magnitude above that.

- CPU: `time.process_time()` around the call (CPU seconds of this process, not wall time, so a loaded
  machine does not make it flaky).
- Memory, two ways: the growth of the process's resident high-water mark (`ru_maxrss`, cheap, every
  input: an input that allocated a gigabyte more than the process ever held raises it by that much), and
  the Python heap peak under `tracemalloc` on a sample (every TRACE_EVERY-th input of each test, and its
  first), which sees allocations the high-water mark hides when the process already peaked higher.

The figures are kept per test (`STATS`); benchmarks/fuzz.py reports the slowest inputs and the memory
high-water mark per kind from them (written as JSON where VRAMCALC_FUZZ_STATS names a file).
"""

from __future__ import annotations

import heapq
import resource
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CPU_SECONDS = 5.0
MEMORY_BYTES = 10**9
TRACE_EVERY = 50
SLOWEST = 5  # inputs kept per test for the report


class CeilingPassed(AssertionError):
    """A generated input that used more CPU time or memory than the ceilings allow."""


@dataclass
class KindStats:
    """What the inputs of one test used."""

    inputs: int = 0
    cpu_seconds: float = 0.0
    rss_growth_max_bytes: int = 0
    traced_inputs: int = 0
    traced_peak_max_bytes: int = 0
    slowest: list[tuple[float, int, str]] = field(default_factory=list)  # a min-heap of (cpu, n, input)

    def as_dict(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "rss_growth_max_bytes": self.rss_growth_max_bytes,
            "traced_inputs": self.traced_inputs,
            "traced_peak_max_bytes": self.traced_peak_max_bytes,
            "slowest": [{"cpu_seconds": round(c, 4), "input": text}
                        for c, _, text in sorted(self.slowest, reverse=True)],
        }


STATS: dict[str, KindStats] = {}


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def describe(args: tuple[Any, ...], kwargs: dict[str, Any], limit: int = 400) -> str:
    """The generated input, shortened (a strategy's data object says only that it drew values)."""
    def fixture(v: Any) -> bool:  # pytest's fixtures (tmp_path_factory, capsys...) are not the input
        return type(v).__module__.startswith("_pytest")

    parts = [repr(a) for a in args if not fixture(a)] + [f"{k}={v!r}" for k, v in kwargs.items() if not fixture(v)]
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def measured(name: str, inner: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call one generated input, measure it, and fail when it passes a ceiling."""
    stats = STATS.setdefault(name, KindStats())
    n = stats.inputs
    stats.inputs += 1
    trace = n % TRACE_EVERY == 0 and not tracemalloc.is_tracing()
    rss_before = _max_rss_bytes()
    if trace:
        tracemalloc.start()
    start = time.process_time()
    try:
        result = inner(*args, **kwargs)
    finally:
        cpu = time.process_time() - start
        traced = 0
        if trace:
            traced = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        growth = _max_rss_bytes() - rss_before
        stats.cpu_seconds += cpu
        stats.rss_growth_max_bytes = max(stats.rss_growth_max_bytes, growth)
        if trace:
            stats.traced_inputs += 1
            stats.traced_peak_max_bytes = max(stats.traced_peak_max_bytes, traced)
        if len(stats.slowest) < SLOWEST or cpu > stats.slowest[0][0]:
            entry = (cpu, n, describe(args, kwargs))
            (heapq.heappush if len(stats.slowest) < SLOWEST else heapq.heapreplace)(stats.slowest, entry)
    # Only an input that ran to its end is judged: an exception it raised is the test's own finding.
    if cpu > CPU_SECONDS:
        raise CeilingPassed(f"{cpu:.1f} s of CPU (ceiling {CPU_SECONDS:g} s) for {describe(args, kwargs)}")
    if max(growth, traced) > MEMORY_BYTES:
        raise CeilingPassed(f"{max(growth, traced) / 1e9:.2f} GB (ceiling {MEMORY_BYTES / 1e9:g} GB) for "
                            f"{describe(args, kwargs)}")
    return result


def summary() -> str:
    """One line for the end of the run: the slowest input and the largest memory, over every test."""
    if not STATS:
        return ""
    slow_name, slow = max(STATS.items(), key=lambda kv: max((c for c, _, _ in kv[1].slowest), default=0.0))
    slowest = max((c for c, _, _ in slow.slowest), default=0.0)
    traced = max(s.traced_peak_max_bytes for s in STATS.values())
    growth = max(s.rss_growth_max_bytes for s in STATS.values())
    return (f"resource ceilings ({CPU_SECONDS:g} s CPU, {MEMORY_BYTES / 1e9:g} GB per input) held: slowest input "
            f"{slowest:.2f} s CPU ({slow_name}); largest traced heap {traced / 1e6:.1f} MB over "
            f"{sum(s.traced_inputs for s in STATS.values())} sampled inputs; largest high-water growth "
            f"{growth / 1e6:.1f} MB")
