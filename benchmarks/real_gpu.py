"""Estimate vs a real GPU over a grid (issue #16): `vramcalc trace --device cuda` per case, readings as data.

Each case runs in its own process (a fresh CUDA context and allocator, so the peaks are the case's own):
`python -m vramcalc trace MODEL ARGS --device cuda --format json`. The grid is 9 architectures (8 families)
× full / LoRA / QLoRA × two shapes × fixed and variable lengths = 108 cases. A case that runs out of GPU memory
is recorded as such (the estimate should say it does not fit).

Writes benchmarks/results/real_gpu.json (every reading: the options, the estimate's tensor / reserved / device
peaks, `max_memory_allocated`, `max_memory_reserved`, NVML used, the errors; the GPU, driver, CUDA, torch,
transformers, peft and bitsandbytes versions) and benchmarks/results/real_gpu.md (the summary). Refuses in one
line (exit 2) without a CUDA GPU.

Usage:  PYTHONPATH=src python benchmarks/real_gpu.py [--only SUBSTRING] [--limit N] [--dry-run] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GB = 10**9

# 9 presets of 8 transformers families that the tracer builds (trace/_config.py SUPPORTED_FAMILIES),
# 124 M to 7.2 B parameters.
MODELS = ("gpt2", "smollm2-360m", "qwen2.5-0.5b", "qwen3-0.6b", "llama-3.2-1b", "gemma-2b", "gemma-2-2b",
          "phi-3-mini", "mistral-7b")
METHODS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("full", ("--method", "full", "--precision", "pure-bf16", "--optimizer-impl", "foreach")),
    ("lora", ("--method", "lora", "--precision", "bf16", "--optimizer-impl", "foreach")),
    ("qlora", ("--method", "qlora", "--precision", "bf16", "--optimizer-impl", "foreach", "--no-kbit-prep")),
)
SHAPES: tuple[tuple[int, int], ...] = ((1, 512), (4, 1024))  # (batch, seq_len)
LENGTHS = ("fixed", "variable")


def cases() -> list[dict[str, Any]]:
    """Every case of the grid: an id, the model, and the `vramcalc trace` arguments."""
    out = []
    for model in MODELS:
        for method, args in METHODS:
            for batch, seq in SHAPES:
                for lengths in LENGTHS:
                    full = (*args, "--batch-size", str(batch), "--seq-len", str(seq),
                            "--variable-lengths" if lengths == "variable" else "--fixed-lengths")
                    out.append({"id": f"{model}-{method}-b{batch}-s{seq}-{lengths}", "model": model, "method": method,
                                "batch_size": batch, "seq_len": seq, "lengths": lengths, "args": list(full)})
    return out


def cuda_available() -> tuple[bool, str]:
    """(True, "") when torch sees a CUDA device, else (False, why)."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed (pip install '.[trace]')"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False"
    return True, ""


def run_case(case: dict[str, Any], timeout_s: int = 1800) -> dict[str, Any]:
    """One case in a fresh process; the trace's JSON, or the error it ended with."""
    cmd = [sys.executable, "-m", "vramcalc", "trace", case["model"], *case["args"], "--device", "cuda",
           "--format", "json"]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False, timeout=timeout_s)
    record = {**case, "seconds": round(time.monotonic() - t0, 1)}
    if proc.returncode == 0:
        doc = json.loads(proc.stdout)
        record.update(estimate=doc["estimate"], measured=doc["measured"], error=doc["error"])
    else:
        tail = (proc.stderr.strip().splitlines() or [""])[-1]
        record["failure"] = "out of memory" if "out of memory" in proc.stderr.lower() else tail[:300]
    return record


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Median / max |error| % per compared figure over the cases that ran."""
    out: dict[str, Any] = {}
    ran = [r for r in records if "error" in r]
    for key in ("allocated_pct", "reserved_pct", "nvml_pct"):
        errs = [r["error"][key] for r in ran if r["error"].get(key) is not None]
        out[key] = ({"n": len(errs), "median_abs": round(statistics.median(abs(e) for e in errs), 2),
                     "max_abs": round(max(abs(e) for e in errs), 2),
                     "median_signed": round(statistics.median(errs), 2)} if errs else {"n": 0})
    out["failed"] = sum("failure" in r for r in records)
    return out


def markdown(doc: dict[str, Any]) -> str:
    """The readings as markdown: environment, summary, one row per case."""
    env = doc["environment"]
    lines = ["# Estimate vs a real GPU", "",
             "GPU " + ", ".join(f"{k} {v}" for k, v in env.items()) + ". Reproduce: "
             "`PYTHONPATH=src python benchmarks/real_gpu.py`.", "",
             "| figure | n | median abs % | max abs % | median signed % |", "| --- | ---: | ---: | ---: | ---: |"]
    for key, label in (("allocated_pct", "tensor peak vs max_memory_allocated"),
                       ("reserved_pct", "reserved peak vs max_memory_reserved"),
                       ("nvml_pct", "reserved + context vs NVML used")):
        s = doc["summary"][key]
        lines.append(f"| {label} | {s['n']} | {s.get('median_abs', '')} | {s.get('max_abs', '')} | "
                     f"{s.get('median_signed', '')} |")
    lines += ["", f"{doc['summary']['failed']} case(s) failed (listed below).", "",
              "| case | allocated GB | estimate GB | error % | reserved GB | estimate GB | error % |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in doc["readings"]:
        if "failure" in r:
            lines.append(f"| {r['id']} | {r['failure']} | | | | | |")
            continue
        m, e, err = r["measured"], r["estimate"], r["error"]
        lines.append(f"| {r['id']} | {m['max_memory_allocated'] / GB:.3f} | {e['tensor_peak_bytes'] / GB:.3f} | "
                     f"{err['allocated_pct']:+.2f} | {m['max_memory_reserved'] / GB:.3f} | "
                     f"{e['reserved_peak_bytes'] / GB:.3f} | {err['reserved_pct']:+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="only cases whose id contains this")
    ap.add_argument("--limit", type=int, default=0, help="at most this many cases (0: all)")
    ap.add_argument("--dry-run", action="store_true", help="list the cases and exit (no GPU needed)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where real_gpu.json/.md go")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per case")
    ns = ap.parse_args(argv)
    if ns.limit < 0:
        print("error: --limit must be >= 0; 0 runs every case", file=sys.stderr)
        return 2
    todo = [c for c in cases() if ns.only in c["id"]]
    if ns.limit:
        todo = todo[: ns.limit]
    if not todo:
        print(f"error: no case id contains {ns.only!r}; see --dry-run for the ids", file=sys.stderr)
        return 2
    if ns.dry_run:
        for c in todo:
            print(c["id"], " ".join(c["args"]))
        return 0
    ok, why = cuda_available()
    if not ok:
        print(f"error: benchmarks/real_gpu.py needs a CUDA GPU: {why}; --dry-run lists the grid without one",
              file=sys.stderr)
        return 2
    readings = []
    for i, c in enumerate(todo, 1):
        r = run_case(c, ns.timeout)
        readings.append(r)
        err = r.get("error", {})
        shown = r.get("failure") or (f"allocated {err['allocated_pct']:+.2f} %, "
                                     f"reserved {err['reserved_pct']:+.2f} %")
        print(f"[{i}/{len(todo)}] {c['id']}: {shown}", flush=True)
    env = next((r["measured"]["environment"] for r in readings if "measured" in r), {})
    doc = {"environment": env, "summary": summarize(readings), "readings": readings}
    ns.out.mkdir(parents=True, exist_ok=True)
    (ns.out / "real_gpu.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (ns.out / "real_gpu.md").write_text(markdown(doc), encoding="utf-8")
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
