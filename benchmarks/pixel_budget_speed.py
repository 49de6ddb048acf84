"""Time memory/pixel_budget.py worst_image (the worst image under LLaMA-Factory's image_max_pixels) against the walk
over every frontier height it replaced (kept as the oracle in tests/test_lf_pixels.py frontier_walk); write
benchmarks/results/pixel_budget_speed.md.

    python benchmarks/pixel_budget_speed.py            # 5 rounds, about 30 seconds (the walk at 1e8 px is slow)
    python benchmarks/pixel_budget_speed.py --runs 1

Both run in this one process on the same budgets, interleaved per round, the fastest of the rounds reported (the
least disturbed by other processes), with their ratio; each pair of answers is compared (a mismatch stops the run).
Target (issue 13): the fast search under 5 ms at any budget.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from test_lf_pixels import LLAMA4, LLAVA_NEXT, frontier_walk  # noqa: E402
from vramcalc.core.memory import pixel_budget  # noqa: E402

# LLaMA-Factory's default 768 x 768, a 336 x 336 budget, LLaVA-NeXT's smallest pinpoint's area less one, 1e6, 1e8
BUDGETS = [3000, 112_896, 225_791, 768 * 768, 1_000_000, 10**8]


def timed(fn, *args) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, v in (("LLaVA-NeXT (v1.6 pinpoints)", LLAVA_NEXT), ("Llama 4 Scout (16 tiles)", LLAMA4)):
        for budget in BUDGETS:
            fast, walk = [], []
            for _ in range(args.runs):
                tf, a = timed(pixel_budget.worst_image, v, budget)
                tw, b = timed(frontier_walk, v, budget)
                if a != b:
                    raise SystemExit(f"{name} at {budget} px: fast {a} != walk {b}")
                fast.append(tf)
                walk.append(tw)
            f, w = min(fast), min(walk)
            rows.append(f"| {name} | {budget:,} | {a[0]} x {a[1]} | {w * 1e3:.1f} | {f * 1e3:.2f} | {w / f:.0f}x |")
            print(rows[-1], flush=True)
    text = ("# pixel_budget.worst_image speed\n\n"
            f"`python benchmarks/pixel_budget_speed.py --runs {args.runs}` (fastest of the rounds; the walk is "
            "tests/test_lf_pixels.py frontier_walk, the search main@be91d35a shipped, run here on today's cost "
            "functions: llama4_tiles.supported_layouts is now built once, which speeds the walk too). Target: the "
            "fast search under 5 ms at any budget.\n\n"
            "| tower | image_max_pixels | worst image (h x w) | walk ms | fast ms | ratio |\n"
            "| --- | ---: | --- | ---: | ---: | ---: |\n" + "\n".join(rows) + "\n")
    (ROOT / "benchmarks" / "results" / "pixel_budget_speed.md").write_text(text)


if __name__ == "__main__":
    main()
