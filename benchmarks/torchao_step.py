"""torchao's low-bit AdamW step: what one parameter's compiled step allocates beyond its states (issue 13).

torchao.optim AdamW8bit / AdamW4bit / AdamWFp8 (torchao 0.18 optim/adam.py) step each parameter through
`torch.compile(single_param_adam, fullgraph=True, dynamic=False)`: the states are dequantized to fp32, updated, and
quantized back (a new fp32 scale per block), the parameter updated in fp32 and copied back. What inductor keeps in
flight is its own buffer plan, which vramcalc's tracer cannot run (Dynamo runs the eager function under a
TorchDispatchMode); this runs real steps on the CPU and reads the allocator's peak above the step's start from
torch.profiler's memory events (benchmarks/compile_peaks.py step_peak_bytes), the third step measured (the first
compiles and creates the states). The same graph on CUDA goes through inductor's Triton backend, whose fusion can
keep less in flight: core/memory/optimizer.py counts these bytes, an upper bound there, and says so.

Usage:  pip install torchao==0.18.0 (no dependencies needed); PYTHONPATH=src python benchmarks/torchao_step.py
Writes benchmarks/results/torchao_step.json (tests/test_savers.py checks optimizer.py's constants against it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_peaks import step_peak_bytes  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "torchao_step.json"
OPTIMIZERS = {"torchao-adamw-8bit": "AdamW8bit", "torchao-adamw-4bit": "AdamW4bit", "torchao-adamw-fp8": "AdamWFp8"}


def measure(name: str, numel: int, dtype_name: str) -> dict[str, Any]:
    """One parameter of `numel` elements (rows of 1,024): its third step's peak above the step's start."""
    import torch
    import torchao.optim

    torch._dynamo.reset()
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(numel // 1024, 1024, dtype=getattr(torch, dtype_name)))
    opt = getattr(torchao.optim, OPTIMIZERS[name])([p], lr=1e-3)
    for _ in range(2):
        p.grad = torch.randn_like(p)
        opt.step()
    p.grad = torch.randn_like(p)
    peak = step_peak_bytes(opt.step)
    return {"optimizer": name, "numel": numel, "dtype": dtype_name, "step_peak_bytes": peak,
            "bytes_per_element": peak / numel}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    import torch
    import torchao

    torch.set_num_threads(1)
    rows = [measure(name, numel, dtype) for name in OPTIMIZERS for numel in (1 << 20, 1 << 22)
            for dtype in ("bfloat16", "float32")]
    for r in rows:
        print(json.dumps(r), flush=True)
    a.out.write_text(json.dumps({"torch": torch.__version__, "torchao": torchao.__version__, "rows": rows},
                                indent=1) + "\n")


if __name__ == "__main__":
    main()
