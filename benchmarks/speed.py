"""Measure vramcalc's cold start and the core's throughput; write benchmarks/results/speed.md.

    PYTHONPATH=src python benchmarks/speed.py            # 20 runs each, ~1 minute
    PYTHONPATH=src python benchmarks/speed.py --runs 5   # quicker, noisier

Cold start: wall time of a fresh process for
    vramcalc estimate mistral-7b --method full --gpu rtx4090
(as `python -m vramcalc ...`, stdout to a pipe) against benchmarks/naive_cli.py, the smallest
Typer + rich + pydantic script that prints one table. Runs are interleaved (naive, fast, typer,
naive, ...) so that machine noise hits all three alike; medians are reported. The fast path's
preset index is built by one untimed warm-up run. The Typer path (VRAMCALC_NO_FASTPATH=1) is
measured too, for reference. Target (issue #7): fast-path median <= 0.5 x naive median.

Throughput: `memory.estimate(model, training)` on pre-built, already-validated specs (pydantic is
not in the loop), over 20 presets x 100 distinct training settings, for about 2 seconds.
Target: >= 100,000 configurations per second.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["estimate", "mistral-7b", "--method", "full", "--gpu", "rtx4090"]
COMMANDS = {
    "naive Typer + rich + pydantic script": [
        sys.executable,
        str(ROOT / "benchmarks" / "naive_cli.py"),
        *ARGS,
    ],
    "vramcalc (fast path)": [sys.executable, "-m", "vramcalc", *ARGS],
    "vramcalc (Typer path, VRAMCALC_NO_FASTPATH=1)": [sys.executable, "-m", "vramcalc", *ARGS],
}


def _env(no_fastpath: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VRAMCALC_NO_FASTPATH", "FORCE_COLOR")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "80"
    if no_fastpath:
        env["VRAMCALC_NO_FASTPATH"] = "1"
    return env


def cold_start(runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    envs = {name: _env("Typer path" in name) for name in COMMANDS}
    for name, cmd in COMMANDS.items():  # warm-up: builds the preset index, fills the OS file cache
        subprocess.run(cmd, env=envs[name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    for _ in range(runs):
        for name, cmd in COMMANDS.items():
            start = time.perf_counter()
            subprocess.run(cmd, env=envs[name], capture_output=True, check=False)
            times[name].append(time.perf_counter() - start)
    return times


def throughput(seconds: float = 2.0) -> tuple[float, int]:
    sys.path.insert(0, str(ROOT / "src"))
    from vramcalc import presets
    from vramcalc.memory import estimate
    from vramcalc.specs import TrainingSpec

    rng = random.Random(7)
    models = list(presets.models().specs)[:20]
    trainings = [
        TrainingSpec(
            method=rng.choice(["full", "lora", "qlora"]),
            batch_size=rng.choice([1, 2, 4, 8, 16]),
            seq_len=rng.choice([512, 1024, 2048, 4096]),
            grad_checkpointing=rng.random() < 0.5,
            optimizer=rng.choice(["adamw", "adamw-8bit", "sgd", "adafactor"]),
        )
        for _ in range(100)
    ]
    pairs = [(m, t) for m in models for t in trainings]
    for m, t in pairs:  # warm the model-level caches (params.inventory, block_linears)
        estimate(m, t)  # type: ignore[arg-type]
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for m, t in pairs:
            estimate(m, t)  # type: ignore[arg-type]
        n += len(pairs)
    return n / (time.perf_counter() - start), len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.md")
    args = parser.parse_args()

    times = cold_start(args.runs)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    naive = med["naive Typer + rich + pydantic script"]
    fast = med["vramcalc (fast path)"]
    rate, distinct = throughput()

    lines = [
        "# vramcalc speed",
        "",
        f"Measured by `PYTHONPATH=src python benchmarks/speed.py --runs {args.runs}` on "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({time.strftime('%Y-%m-%d')}).",
        "",
        "## Cold start",
        "",
        f"`vramcalc {' '.join(ARGS)}`, stdout to a pipe, median of {args.runs} interleaved runs:",
        "",
        "| command | median | min | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, ts in times.items():
        lines.append(
            f"| {name} | {1000 * med[name]:.0f} ms | {1000 * min(ts):.0f} ms | {1000 * max(ts):.0f} ms |"
        )
    verdict = "meets" if fast <= 0.5 * naive else "DOES NOT meet"
    lines += [
        "",
        f"Fast path / naive = **{fast / naive:.2f}** (target <= 0.50: {verdict} it).",
        "",
        "## Core throughput",
        "",
        f"`memory.estimate` on pre-built specs, {distinct:,} distinct (model, training) pairs"
        " cycled for ~2 s:",
        f"**{rate:,.0f} configurations per second** (target >= 100,000: "
        f"{'meets' if rate >= 100_000 else 'DOES NOT meet'} it).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
