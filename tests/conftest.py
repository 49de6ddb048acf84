"""Hypothesis profiles and a count of the inputs the property and fuzz tests try.

- `full` (the default): enough examples that one run of the whole suite tries at least 10,000
  generated inputs; the total is printed at the end of the run ("hypothesis inputs tried: N").
- `ci` (selected when the environment variable CI is set, as GitHub Actions and most CI services
  do): a tenth of the examples, for a fast gate. Override with --hypothesis-profile=NAME.
Both are deterministic (derandomize, no example database: every run, here and in CI, tries the same
inputs, so a failure reproduces and none appears only from a saved database) and have no deadline: the
CLI fuzzers render tables, whose time varies with the machine, and a flaky deadline is not a finding.
A longer, random search is `--hypothesis-profile=explore` (the same counts, a new seed each run).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

import limits

FULL_EXAMPLES = 1000

settings.register_profile(
    "full",
    max_examples=FULL_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    max_examples=FULL_EXAMPLES // 10,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "explore",
    max_examples=FULL_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI") else "full")

_tried: dict[str, int] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Wrap each hypothesis test's inner function so every generated input is counted and held to the
    resource ceilings (tests/limits.py: 5 s of CPU, 1 GB)."""
    for item in items:
        func: Any = getattr(item, "obj", None)
        handle = getattr(func, "hypothesis", None)
        if handle is None or getattr(handle.inner_test, "_counted", False):
            continue
        handle.inner_test = _counting(handle.inner_test, item.nodeid.split("[")[0])


def _counting(inner: Any, name: str) -> Any:
    # functools.wraps: with derandomize, hypothesis seeds each test from a digest of its inner function's source,
    # name and signature; the wrapper must digest as the test itself (a default argument holding the function
    # put its memory address in the signature: a new seed, so other inputs, on every run).
    @functools.wraps(inner)
    def counted(*args: Any, **kwargs: Any) -> Any:
        _tried[name] = _tried.get(name, 0) + 1
        return limits.measured(name, inner, args, kwargs)

    counted._counted = True  # type: ignore[attr-defined]
    return counted


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _tried:
        total = sum(_tried.values())
        terminalreporter.write_line(
            f"hypothesis inputs tried: {total} in {len(_tried)} property/fuzz tests "
            f"(profile {settings().max_examples} examples per test)"
        )
        terminalreporter.write_line(limits.summary())
        target = os.environ.get("VRAMCALC_FUZZ_STATS")
        if target:  # benchmarks/fuzz.py: the slowest inputs and the memory high-water mark per test
            doc = {name: stats.as_dict() for name, stats in sorted(limits.STATS.items())}
            Path(target).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
