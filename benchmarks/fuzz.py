"""The fuzz suite with many more inputs: `python benchmarks/fuzz.py [PER_KIND] [--also-properties]`.

Runs tests/test_fuzz_io.py (every file kind's reader, generated from its schema) with PER_KIND inputs per
kind (default 50,000; CI runs FUZZ_EXAMPLES=3,000), same strategies, same assertions, deterministic. With
--also-properties it also runs tests/test_properties.py (1,000 examples per property: PROPERTY_EXAMPLES) and
the CLI fuzzers at their `full` profile.
Every input is held to the resource ceilings of tests/limits.py (5 s of CPU, 1 GB); this prints, per kind,
the inputs tried, the slowest inputs and the memory high-water mark, and writes benchmarks/results/fuzz.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fuzz.md"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def report(stats: dict[str, dict], per_kind: str, seconds: float, rc: int) -> str:
    """The markdown: one row per kind, then the slowest inputs over all kinds."""
    lines = [
        "# Fuzz run (benchmarks/fuzz.py)",
        "",
        f"{sum(s['inputs'] for s in stats.values()):,} generated inputs ({per_kind} per io kind) in "
        f"{seconds:.0f} s, pytest rc {rc}. Ceilings per input (tests/limits.py): 5 s of CPU, 1 GB.",
        "",
        "| test (kind) | inputs | CPU s total | slowest input, CPU s | high-water growth, MB | traced heap peak, MB "
        "(sampled inputs) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in stats.items():
        slowest = s["slowest"][0]["cpu_seconds"] if s["slowest"] else 0.0
        lines.append(f"| {name.split('::')[-1]} | {s['inputs']:,} | {s['cpu_seconds']:.1f} | {slowest:.4f} | "
                     f"{_mb(s['rss_growth_max_bytes'])} | {_mb(s['traced_peak_max_bytes'])} "
                     f"({s['traced_inputs']}) |")
    slow = sorted(((e["cpu_seconds"], name.split("::")[-1], e["input"]) for name, s in stats.items()
                   for e in s["slowest"]), reverse=True)[:10]
    lines += ["", "Slowest inputs:", ""]
    lines += [f"- {c:.4f} s, {name}: `{text[:200].replace('`', chr(39))}`" for c, name, text in slow]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    per_kind = args[0] if args else "50000"
    files = ["tests/test_fuzz_io.py"]
    if "--also-properties" in sys.argv:
        files += ["tests/test_properties.py", "tests/test_fuzz_cli.py", "tests/test_fuzz_presets.py"]
    with tempfile.TemporaryDirectory() as tmp:
        stats_file = Path(tmp) / "stats.json"
        env = {**os.environ, "FUZZ_EXAMPLES": per_kind, "PYTHONPATH": str(ROOT / "src"),
               "VRAMCALC_FUZZ_STATS": str(stats_file), "PROPERTY_EXAMPLES": "1000"}
        env.pop("CI", None)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                             env=env, cwd=ROOT)
        seconds = time.perf_counter() - start
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else {}
    text = report(stats, per_kind, seconds, rc)
    print(text)
    RESULTS.write_text(text, encoding="utf-8")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
