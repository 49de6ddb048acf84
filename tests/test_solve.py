"""solve.py and margin.py: bisection limits exact at the boundary, suggestions, margins and sizes."""

from __future__ import annotations

import pytest

from vramcalc.core.errors import BadInput
from vramcalc.core.margin import Margin, classify, parse_margin, parse_size
from vramcalc.core.memory import estimate
from vramcalc.core.searches import (
    Estimator,
    fit_report,
    largest_fitting,
    max_batch_size,
    max_lora_rank,
    max_seq_len,
    with_changes,
)
from vramcalc.core.specs import TrainingSpec
from vramcalc.io import presets

# nvidia-smi total of an RTX 4090, 24,564 MiB (presets/gpus.yaml).
RTX4090_BYTES = 25_757_220_864


def test_largest_fitting_linear_model() -> None:
    # peak(x) = 10 + 3x ≤ 100  ⇔  x ≤ 30: 30 fits (100), 31 does not (103).
    assert largest_fitting(lambda x: 10 + 3 * x, 100, cap=1000) == 30


def test_largest_fitting_none_and_cap() -> None:
    assert largest_fitting(lambda x: 200 + x, 100, cap=1000) is None  # x = 1 already needs 201
    assert largest_fitting(lambda x: x, 10**9, cap=777) == 777  # everything fits: the cap


def test_largest_fitting_is_logarithmic() -> None:
    calls: list[int] = []

    def peak(x: int) -> int:
        calls.append(x)
        return x

    # answer 40,000 under a cap of 2^16: ~16 doublings + ~16 bisection steps, not 40,000 evaluations.
    assert largest_fitting(peak, 40_000, cap=2**16) == 40_000
    assert len(calls) <= 2 * 17 + 1


@pytest.fixture(scope="module")
def mistral():  # type: ignore[no-untyped-def]
    return presets.find_model("mistral-7b")


def test_qlora_batch_limit_on_4090(mistral) -> None:  # type: ignore[no-untyped-def]
    # QLoRA, seq 2048: batch 1 fits the 4090's 25,757,220,864 B and batch 2 does not (memory.estimate:
    # about 18.8 GB and 33 GB, activations grow ~14 GB per sample), so the largest batch is exactly 1.
    t = TrainingSpec(method="qlora", seq_len=2048)
    assert estimate(mistral, t).peak_bytes <= RTX4090_BYTES
    assert estimate(mistral, with_changes(t, {"batch_size": 2})).peak_bytes > RTX4090_BYTES
    assert max_batch_size(Estimator(mistral), t, RTX4090_BYTES) == 1


@pytest.mark.parametrize(
    "solver,option",
    [(max_batch_size, "batch_size"), (max_seq_len, "seq_len"), (max_lora_rank, "lora_rank")],
    ids=["batch", "seq", "rank"],
)
def test_limits_are_exact_at_the_boundary(mistral, solver, option) -> None:  # type: ignore[no-untyped-def]
    t = TrainingSpec(method="lora", seq_len=256, grad_checkpointing=True)
    budget = RTX4090_BYTES
    answer = solver(Estimator(mistral), t, budget)
    assert answer is not None
    assert estimate(mistral, with_changes(t, {option: answer})).peak_bytes <= budget
    assert estimate(mistral, with_changes(t, {option: answer + 1})).peak_bytes > budget


def test_lora_rank_is_null_for_full(mistral) -> None:  # type: ignore[no-untyped-def]
    assert max_lora_rank(Estimator(mistral), TrainingSpec(method="full"), 10**15) is None


def test_suggestions_fit_and_are_minimal(mistral) -> None:  # type: ignore[no-untyped-def]
    # Full fine-tuning of 7.2 B parameters needs ≥ 12 B/param = 86.9 GB (seed 001): never on a 4090.
    t = TrainingSpec(method="full", batch_size=4, seq_len=2048)
    rep = fit_report(mistral, t, RTX4090_BYTES, Margin())
    assert rep.status == "DOES NOT FIT"
    assert rep.max_batch_size is None and rep.max_seq_len is None and rep.max_lora_rank is None
    assert rep.suggestions
    kinds = []
    for s in rep.suggestions:
        peak = estimate(mistral, with_changes(t, s.changes)).peak_bytes
        assert peak == s.peak_bytes <= RTX4090_BYTES
        kinds.append(frozenset(s.changes))
        if "grad_accum" in s.changes:  # the effective batch is kept: 4 × 1
            assert s.changes["batch_size"] * s.changes["grad_accum"] == 4
    assert [s.n_changes for s in rep.suggestions] == sorted(s.n_changes for s in rep.suggestions)


def test_more_gpus_with_zero3_is_exact_at_the_boundary() -> None:
    # Llama-3.1-70B, full, mixed-bf16 (16 B/param = 1,129 GB of model states, ZeRO paper §3.1) on
    # A100-80GB: ZeRO-3 shards them; the fewest whole layouts (8 per node) that fit is the answer, and
    # the layout before it (2 nodes = 16 GPUs) does not fit (memory.estimate per GPU).
    model = presets.find_model("llama-3.1-70b")
    a100 = presets.find_gpu("a100-80gb").memory_bytes
    t = TrainingSpec(method="full", precision="mixed-bf16")
    rep = fit_report(model, t, a100, Margin())
    assert rep.status == "DOES NOT FIT" and rep.min_gpus is not None
    more = [s for s in rep.suggestions if "zero" in s.changes]
    assert len(more) == 1 and more[0].changes["zero"] == 3
    n = rep.min_gpus
    assert more[0].changes["gpus_per_node"] * more[0].changes.get("nodes", 1) == n
    assert estimate(model, with_changes(t, more[0].changes)).peak_bytes <= a100
    fewer = {"zero": 3, "gpus_per_node": 8, "nodes": n // 8 - 1} if n > 8 else {"zero": 3, "gpus_per_node": n - 1}
    assert estimate(model, with_changes(t, fewer)).peak_bytes > a100


def test_no_suggestions_when_it_fits(mistral) -> None:  # type: ignore[no-untyped-def]
    rep = fit_report(mistral, TrainingSpec(method="qlora"), RTX4090_BYTES, Margin())
    assert rep.status == "FITS" and rep.suggestions == ()


@pytest.mark.parametrize(
    "needed,capacity,expected",
    [
        (95, 100, "FITS"),  # margin ceil(95 × 5 %) = 5, headroom 5 ≥ 5
        (96, 100, "TIGHT"),  # margin ceil(4.8) = 5, headroom 4 < 5
        (100, 100, "TIGHT"),  # fits exactly, no headroom
        (101, 100, "DOES NOT FIT"),
    ],
)
def test_classify(needed: int, capacity: int, expected: str) -> None:
    assert classify(needed, capacity, Margin(fraction=0.05)) == expected


def test_zero_margin_never_tight() -> None:
    assert classify(100, 100, parse_margin("0%")) == "FITS"


@pytest.mark.parametrize("text,fraction", [("5%", 0.05), ("0.1", 0.1), ("12.5%", 0.125)])
def test_parse_margin(text: str, fraction: float) -> None:
    assert parse_margin(text).fraction == pytest.approx(fraction)


@pytest.mark.parametrize("text", ["12", "abc", "-1%", "100%"])
def test_parse_margin_rejects(text: str) -> None:
    with pytest.raises(BadInput, match="--margin"):
        parse_margin(text)


@pytest.mark.parametrize(
    "text,n_bytes",
    [
        ("20GB", 20 * 10**9),
        ("24GiB", 24 * 2**30),  # 25,769,803,776
        ("512 MiB", 512 * 2**20),
        ("80000000000", 80 * 10**9),
    ],
)
def test_parse_size(text: str, n_bytes: int) -> None:
    assert parse_size(text) == n_bytes


@pytest.mark.parametrize(("text", "why"), [
    ("twenty gigs", "is not a size"),
    ("24", "has no unit"),  # issue 12: a bare 24 is 24 GB to a person, 24 bytes to a parser
    ("1e309", "not a finite size"),  # issue 19: float('1e309') is inf; int(inf) raised OverflowError
    ("1e400GB", "not a finite size"),
    ("-5GB", "must be positive"),
])
def test_parse_size_rejects(text: str, why: str) -> None:
    with pytest.raises(BadInput, match=f"--max-memory .*{why}"):
        parse_size(text)


def test_parse_size_takes_a_bare_byte_count_of_a_megabyte_or_more() -> None:
    assert parse_size("80000000000") == 80_000_000_000  # docs/compare-and-ci.md uses this form
    assert parse_size("24GiB") == 24 * 2**30


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.07, 0.25, 0.333333])
@pytest.mark.parametrize("capacity", [1, 100, 107, RTX4090_BYTES])
def test_largest_peak_is_the_fits_boundary(fraction: float, capacity: int) -> None:
    # the largest peak classify() calls FITS: one byte more is TIGHT (or the capacity itself is exceeded)
    m = Margin(fraction, "--margin test")
    top = m.largest_peak(capacity)
    assert classify(top, capacity, m) == "FITS"
    assert classify(top + 1, capacity, m) != "FITS"


def test_largest_peak_by_hand() -> None:
    # 5 %: 95 + ceil(4.75) = 100 fits 100 bytes, 96 + ceil(4.8) = 101 does not (the table of test_classify above)
    assert Margin(0.05).largest_peak(100) == 95
    assert Margin(0.0).largest_peak(100) == 100


def test_fit_limits_keep_an_explicit_margin(mistral) -> None:  # type: ignore[no-untyped-def]
    # QLoRA on a 4090 fits with room to spare; with --margin 25 % each limit is the largest value whose peak leaves
    # 25 % of it free, which is below the GPU-filling limit and FITS, where the next value up would not.
    t = TrainingSpec(method="qlora")
    m = Margin(0.25, "--margin 25%")
    filled = fit_report(mistral, t, RTX4090_BYTES, m)
    kept = fit_report(mistral, t, RTX4090_BYTES, m, limits_keep_margin=True)
    assert filled.limits_budget_bytes == RTX4090_BYTES
    assert kept.limits_budget_bytes == m.largest_peak(RTX4090_BYTES) < RTX4090_BYTES
    assert kept.max_batch_size is not None and filled.max_batch_size is not None
    assert kept.max_batch_size < filled.max_batch_size
    assert kept.max_seq_len is not None and filled.max_seq_len is not None
    assert kept.max_seq_len < filled.max_seq_len
    est = Estimator(mistral)
    for field, value in (("batch_size", kept.max_batch_size), ("seq_len", kept.max_seq_len)):
        assert classify(est.peak(with_changes(t, {field: value})), RTX4090_BYTES, m) == "FITS"
        assert classify(est.peak(with_changes(t, {field: value + 1})), RTX4090_BYTES, m) == "TIGHT"
