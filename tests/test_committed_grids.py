"""Every committed accuracy grid holds today's estimates.

benchmarks/results/accuracy_NAME.json is written by `benchmarks/accuracy.py --grid NAME` (the estimate beside the
tracer's figures, read from the committed trace cache); docs/accuracy.md and the README quote its summaries. An
estimator change that moves any case must re-run the grid, so the committed figures stay true: a merge once let two
features share a local name and every later norm of a q/k-norm model saved 3,072 B x hidden per token (qwen3-0.6b, 4
layers, full b1 s512: +268 % against the trace) with every unit test green.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench_module import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


BENCH = load_benchmark("accuracy", "accuracy_bench")
# --grid sharded compares the sharded tensors' bytes with torch's own sharding (accuracy.py sharded_main), not the
# estimate with a trace: its results have no cases of this shape
GRIDS = sorted(set(BENCH.GRIDS) - {"sharded"})


def _results(grid: str) -> Path:
    # benchmarks/accuracy.py main: the base grid writes accuracy.json, the others accuracy_NAME.json
    return RESULTS / ("accuracy.json" if grid == "base" else f"accuracy_{grid}.json")


def test_every_grid_has_its_committed_results() -> None:
    assert all(_results(g).is_file() for g in GRIDS), [g for g in GRIDS if not _results(g).is_file()]


@pytest.mark.parametrize("grid", GRIDS)
def test_committed_grid_holds_todays_estimates(grid: str) -> None:
    data = json.loads(_results(grid).read_text(encoding="utf-8"))
    built = {c["id"]: c for c in BENCH.GRIDS[grid]()}  # the grid's cases (tuples where the JSON has lists)
    assert {c["id"] for c in data["cases"]} <= set(built), "a committed case the grid no longer builds: re-run it"
    stale = []
    for case in data["cases"]:
        now = BENCH.compare(built[case["id"]], case["trace"])["estimate"]
        if (now["peak_bytes"], now["peak_phase"]) != (case["estimate"]["peak_bytes"], case["estimate"]["peak_phase"]):
            stale.append(f"{case['id']}: {case['estimate']['peak_bytes']:,} -> {now['peak_bytes']:,}")
    assert not stale, (f"re-run `python benchmarks/accuracy.py --grid {grid}` ({len(stale)} cases moved): "
                       + "; ".join(stale[:5]))
