"""Measure vramcalc's cold start and the core's throughput; write benchmarks/results/speed.md.

    python benchmarks/speed.py            # 15 rounds, ~1 minute
    python benchmarks/speed.py --runs 5   # quicker, noisier

Cold start: wall time of a fresh process for
    vramcalc estimate mistral-7b --method full --gpu rtx4090
(as `python -m vramcalc ...`, the same interpreter) against benchmarks/naive_cli.py, the smallest Typer +
rich + pydantic script that prints one table, in two settings: stdout to a pipe, and stdout to a pseudo-
terminal with colour (where people ask it). vramcalc is also measured on its first run after installing
(an empty cache directory each time: the preset index is compiled) and with a cache directory that cannot
be written (the index is built in memory by every run). Runs are interleaved, one of each per round, so that
machine noise hits all alike; medians are reported. Targets (issue 11): pipe and terminal <= 0.5 x the naive
script in the same setting; first run and unwritable cache <= 2 x the naive script (piped).

Throughput: `memory.estimate(model, training)` on pre-built specs, shaped like a `compare`/`fit` sweep: 20
presets x 10 settings (method, precision, optimizer, LoRA, checkpointing, attention ...) x 10 token shapes
(batch, seq_len, grad_accum), every configuration distinct, cycled for about 2 seconds. Target: >= 100,000
configurations per second. Also reported: one pass over configurations whose settings were never seen.
"""

from __future__ import annotations

import argparse
import os
import platform
import pty
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["estimate", "mistral-7b", "--method", "full", "--gpu", "rtx4090"]
NAIVE = [sys.executable, str(ROOT / "benchmarks" / "naive_cli.py"), *ARGS]
VRAMCALC = [sys.executable, "-m", "vramcalc", *ARGS]


# Byte-compiled modules, as an installed package has them (pip compiles them at install time) and as the
# naive script's typer/rich/pydantic have them in site-packages: the warm-up run writes them here, outside
# the source tree, even where PYTHONDONTWRITEBYTECODE is set (it is on some machines; without this every
# run would compile vramcalc from source and measure the compiler).
PYCACHE = tempfile.mkdtemp(prefix="vramcalc-pycache-")


def _env(cache_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "NO_COLOR", "VRAMCALC_PRESETS", "PYTHONDONTWRITEBYTECODE")}
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["COLUMNS"] = "80"
    env["TERM"] = "xterm-256color"
    env["VRAMCALC_CACHE_DIR"] = cache_dir
    return env


def run_piped(cmd: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, check=False).stdout
    return time.perf_counter() - start, out


def run_in_terminal(cmd: list[str], env: dict[str, str]) -> tuple[float, bytes]:
    """The command with stdout (and stderr) on a pseudo-terminal, as in an interactive shell."""
    master, slave = pty.openpty()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 10)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait()
    elapsed = time.perf_counter() - start
    os.close(master)
    return elapsed, b"".join(chunks)


def cold_start(runs: int) -> tuple[dict[str, list[float]], dict[str, bytes]]:
    """Seconds per run for each setting, and one output of each (to show colour was on in the terminal)."""
    warm = tempfile.mkdtemp(prefix="vramcalc-bench-")
    unwritable = os.path.join(os.devnull, "cache")  # a path under a file: mkdir fails, even for root
    settings = {
        "naive script, piped": (run_piped, NAIVE, warm),
        "naive script, terminal": (run_in_terminal, NAIVE, warm),
        "vramcalc, piped": (run_piped, VRAMCALC, warm),
        "vramcalc, terminal (colour)": (run_in_terminal, VRAMCALC, warm),
        "vramcalc, first run after install": (run_piped, VRAMCALC, ""),
        "vramcalc, unwritable cache directory": (run_piped, VRAMCALC, unwritable),
    }
    run_piped(VRAMCALC, _env(warm))  # builds the preset index in the warm cache, fills the OS file cache
    run_piped(NAIVE, _env(warm))
    times: dict[str, list[float]] = {name: [] for name in settings}
    outputs: dict[str, bytes] = {}
    for _ in range(runs):
        for name, (runner, cmd, cache) in settings.items():
            fresh = tempfile.mkdtemp(prefix="vramcalc-first-") if cache == "" else None
            seconds, out = runner(cmd, _env(fresh or cache))
            if fresh:
                shutil.rmtree(fresh, ignore_errors=True)
            times[name].append(seconds)
            outputs[name] = out
    shutil.rmtree(warm, ignore_errors=True)
    return times, outputs


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
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "speed.md")
    args = parser.parse_args()

    times, outputs = cold_start(args.runs)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    rate, distinct, first, n_first = throughput()
    colour = b"\x1b[" in outputs["vramcalc, terminal (colour)"]

    lines = [
        "# vramcalc speed",
        "",
        f"Measured by `python benchmarks/speed.py --runs {args.runs}` on "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs ({time.strftime('%Y-%m-%d')}).",
        "",
        "## Cold start",
        "",
        f"`vramcalc {' '.join(ARGS)}`, median of {args.runs} interleaved rounds:",
        "",
        "| setting | median | min | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, ts in times.items():
        lines.append(f"| {name} | {1000 * med[name]:.0f} ms | {1000 * min(ts):.0f} ms | {1000 * max(ts):.0f} ms |")
    checks = [
        ("piped / naive piped", med["vramcalc, piped"] / med["naive script, piped"], 0.5),
        ("terminal / naive terminal", med["vramcalc, terminal (colour)"] / med["naive script, terminal"], 0.5),
        ("first run / naive piped", med["vramcalc, first run after install"] / med["naive script, piped"], 2.0),
        ("unwritable cache / naive piped",
         med["vramcalc, unwritable cache directory"] / med["naive script, piped"], 2.0),
    ]
    lines += ["", "| ratio | value | target | |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {name} | {ratio:.2f} | <= {target:.1f} | {'meets' if ratio <= target else 'DOES NOT meet'} |"
              for name, ratio, target in checks]
    lines += [
        "",
        f"The terminal run printed colour (SGR escape codes): {'yes' if colour else 'NO'}.",
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
