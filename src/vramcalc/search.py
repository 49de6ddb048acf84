"""Searches over monotone predicates, exact at the boundary. Pure: no I/O.

Memory grows with batch, sequence, rank and context, and shrinks with more GPUs, so "the largest that
fits" and "the fewest that fit" are boundaries of a monotone predicate: gallop, then bisect.
"""

from __future__ import annotations

from collections.abc import Callable


def last_true(ok: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """The largest n in [lo, hi] with ok(n), for ok true then false; None when ok(lo) is false.

    Doubles from lo first (answers are usually small next to `hi`), then bisects: ok(answer) is true
    and ok(answer + 1) is false or answer == hi.
    """
    if lo > hi or not ok(lo):
        return None
    good, probe = lo, max(lo * 2, lo + 1)
    while probe <= hi and ok(probe):
        good, probe = probe, max(probe * 2, probe + 1)
    bad = min(probe, hi + 1)  # hi + 1 stands for "beyond the search range"
    while bad - good > 1:
        mid = (good + bad) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good


def first_true(ok: Callable[[int], bool], lo: int, hi: int) -> int | None:
    """The smallest n in [lo, hi] with ok(n), for ok false then true; None when ok(hi) is false."""
    if lo > hi or not ok(hi):
        return None
    if ok(lo):
        return lo
    bad, good = lo, hi  # invariant: not ok(bad), ok(good)
    while good - bad > 1:
        mid = (bad + good) // 2
        if ok(mid):
            good = mid
        else:
            bad = mid
    return good
