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
not in the loop), shaped like a `compare`/`fit` sweep: 20 presets x 10 settings (method, precision,
optimizer, LoRA, checkpointing, attention ...) x 10 token shapes (batch, seq_len, grad_accum), every
configuration distinct, cycled for about 2 seconds. Target: >= 100,000 configurations per second.
Also reported: one pass over configurations whose settings were never seen (the worst case).
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


def _settings(rng: random.Random) -> dict[str, object]:
    """Everything of a TrainingSpec but the token shape: what a `compare`/`fit` sweep holds fixed."""
    method = rng.choice(["full", "lora", "qlora", "freeze"])
    kw: dict[str, object] = {
        "method": method,
        "precision": rng.choice(["bf16", "fp16", "pure-bf16", "mixed-bf16", "amp-bf16", "fp32"]),
        "optimizer": rng.choice(["adamw", "adamw-8bit", "paged-adamw", "sgd", "sgd-momentum", "adafactor", "lion"]),
        "optimizer_impl": rng.choice(["fused", "foreach", "for-loop"]),
        "grad_checkpointing": rng.random() < 0.5,
        "attention": rng.choice(["sdpa", "eager"]),
    }
    if method in ("lora", "qlora"):
        kw.update(lora_rank=rng.choice([4, 8, 16, 64]), lora_dropout=rng.choice([0.0, 0.05]),
                  lora_targets=rng.choice([("q_proj", "v_proj"), ("all-linear",)]),
                  adapter_dtype=rng.choice(["fp32", "bf16"]))
    if method == "qlora":
        kw.update(quant_bits=rng.choice([4, 8]), double_quant=rng.random() < 0.5)
    if method == "freeze":
        kw.update(freeze_layers=rng.choice([0, 4, 12]), train_head=rng.random() < 0.5)
    return kw


def _shape(rng: random.Random) -> dict[str, int]:
    """The token shape a sweep varies."""
    return {"batch_size": rng.choice([1, 2, 4, 8, 16, 32]), "seq_len": rng.choice([256, 512, 1024, 2048, 4096, 8192]),
            "grad_accum": rng.choice([1, 1, 2, 8])}


def throughput(seconds: float = 2.0) -> tuple[float, int, float, int]:
    """(sweep rate, sweep pairs, first-sight rate, first-sight pairs), in configurations per second.

    Sweep: 20 presets (a seeded sample of the catalog) x 10 settings x 10 token shapes, all distinct
    configurations, cycled for `seconds` (caches warm, as in a long `compare`/`fit` sweep).
    First sight: one pass over 2,000 configurations whose settings were never evaluated before (only
    the model-level caches are warm): the cost of a configuration the caches cannot help.
    Pairs that the CLI would reject (a LoRA target the model lacks) are left out.
    """
    sys.path.insert(0, str(ROOT / "src"))
    from vramcalc.core.errors import VramcalcError
    from vramcalc.core.memory import estimate
    from vramcalc.core.specs import TrainingSpec
    from vramcalc.io import presets

    rng = random.Random(7)
    models = rng.sample(list(presets.models().specs), 20)

    def valid(pairs: list[tuple[object, TrainingSpec]]) -> list[tuple[object, TrainingSpec]]:
        kept = []
        for m, t in pairs:
            try:
                estimate(m, t)  # type: ignore[arg-type]
            except VramcalcError:
                continue
            kept.append((m, t))
        return kept

    pairs = valid([(m, TrainingSpec(**settings, **_shape(rng))) for m in models
                   for settings in [_settings(rng) for _ in range(10)] for _ in range(10)])
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for m, t in pairs:
            estimate(m, t)  # type: ignore[arg-type]
        n += len(pairs)
    sweep = n / (time.perf_counter() - start)

    fresh = [(m, TrainingSpec(**_settings(rng), **_shape(rng))) for m in models for _ in range(100)]
    seen = {t for _, t in pairs}
    fresh = [(m, t) for m, t in fresh if t not in seen]
    start = time.perf_counter()
    for m, t in fresh:
        try:
            estimate(m, t)  # type: ignore[arg-type]
        except VramcalcError:
            continue
    first = len(fresh) / (time.perf_counter() - start)
    return sweep, len(pairs), first, len(fresh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.md")
    args = parser.parse_args()

    times = cold_start(args.runs)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    naive = med["naive Typer + rich + pydantic script"]
    fast = med["vramcalc (fast path)"]
    rate, distinct, first, n_first = throughput()

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
        f"`memory.estimate` on pre-built specs. Sweep: {distinct:,} distinct (model, training) pairs"
        " (20 presets x 10 settings x 10 batch/seq/grad_accum shapes) cycled for ~2 s:",
        f"**{rate:,.0f} configurations per second** (target >= 100,000: "
        f"{'meets' if rate >= 100_000 else 'DOES NOT meet'} it).",
        "",
        f"First sight: {n_first:,} configurations whose settings were never evaluated before, one pass:"
        f" {first:,.0f} configurations per second (no target; the per-settings caches cannot help here).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
