"""Monotone searches: exact at the boundary, None when nothing qualifies."""

from __future__ import annotations

import pytest

from vramcalc.core.searches import first_true, last_true


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8, 9, 100, 999, 1000])
def test_last_true_finds_the_boundary(limit: int) -> None:
    calls: list[int] = []

    def ok(n: int) -> bool:
        calls.append(n)
        return n <= limit

    assert last_true(ok, 1, 1000) == limit
    assert len(calls) <= 2 * 11 + 2  # doubling then bisection: O(log2 1000) probes, not a scan


def test_last_true_edges() -> None:
    assert last_true(lambda n: False, 1, 10) is None  # nothing fits
    assert last_true(lambda n: True, 1, 10) == 10  # everything in range fits: the cap
    assert last_true(lambda n: n <= 5, 5, 10) == 5  # lo itself is the answer
    assert last_true(lambda n: True, 3, 2) is None  # empty range


@pytest.mark.parametrize("threshold", [0, 1, 5, 6, 63])
def test_first_true_finds_the_boundary(threshold: int) -> None:
    assert first_true(lambda i: i >= threshold, 0, 63) == threshold


def test_first_true_edges() -> None:
    assert first_true(lambda i: False, 0, 10) is None
    assert first_true(lambda i: True, 0, 10) == 0
