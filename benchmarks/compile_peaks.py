"""A training step's tensor peak, eager vs torch.compile, measured on the CPU (issue 13, `--compile`).

vramcalc's tracer cannot see a compiled step: Dynamo runs the eager function whenever a TorchDispatchMode is on the
stack (torch/_dynamo/convert_frame.py, `any_torch_dispatch_mode_on_stack`), and the tracer is one. So this runs real
steps on real CPU tensors and reads the CPU allocator instead: with `profile_memory=True`, c10's
ProfiledCPUMemoryReporter reports every allocation and free to torch.profiler as a `[memory]` event with its signed
byte count; their running sum over one step, in time order, is the bytes allocated since the step began, and its
maximum is the step's peak above what was alive before it (the weights and, after the first step, the AdamW states,
which `resident_bytes` adds back). Inductor's CPU kernels allocate their buffers through the same allocator.

The step is the Trainer's: a transformers 5.24 toy Llama / Qwen2 (2 layers, hidden 256, GQA 4/2 heads, vocab 4096,
SDPA), `model(input_ids, labels)` with the loss in its forward, backward, torch.optim.AdamW's step,
zero_grad(set_to_none=True); the second step is measured (the first compiles). LoRA is peft r 16 on q_proj, v_proj;
checkpointing is transformers' (non-reentrant). Backends:
  none             the eager step
  inductor         torch.compile(model): transformers' Trainer via accelerate's prepare_model (TorchDynamoPlugin)
  inductor_layers  each decoder layer compiled in place: torchtune's training/_compile.py compile_model
  eager, aot_eager, aot_eager_decomp_partition   Dynamo's debugging backends (vramcalc refuses them)

Usage:  PYTHONPATH=src python benchmarks/compile_peaks.py [--dtype bfloat16] [--backends none,inductor] ...
Appends to benchmarks/results/compile_peaks.json (rows already there are kept, not rerun); needs a C++ compiler
for inductor. tests/test_compile.py checks the relation the rows show and the range core/memory/compiled.py quotes.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "compile_peaks.json"
KEY = ("arch", "method", "gc", "backend", "dtype", "batch", "seq")
VOCAB = 4096


def step_peak_bytes(step: Callable[[], None]) -> int:
    """The most CPU bytes allocated at once during `step()`, above what was allocated before it."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def toy_model(arch: str, method: str, gc_on: bool, dtype: Any, layers: int = 2, hidden: int = 256) -> Any:
    """A freshly initialised toy causal LM, as the Trainer would hold it."""
    import torch
    import transformers

    cls = transformers.LlamaConfig if arch == "llama" else transformers.Qwen2Config
    cfg = cls(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    if gc_on:
        model.gradient_checkpointing_enable()  # transformers 5.24: use_reentrant=False
        if method == "lora":
            model.enable_input_require_grads()  # as the Trainer does for a PEFT model under checkpointing
    if method == "lora":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=16, target_modules=["q_proj", "v_proj"]))
    model.train()
    return model


def measure(arch: str, method: str, gc_on: bool, backend: str, dtype_name: str, batch: int, seq: int,
            layers: int = 2, hidden: int = 256) -> dict[str, Any]:
    """One row: the second step's peak above its start, and the bytes alive before it."""
    import torch

    torch._dynamo.reset()
    dtype = getattr(torch, dtype_name)
    model = toy_model(arch, method, gc_on, dtype, layers, hidden)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    if backend == "inductor_layers":
        for layer in model.get_decoder().layers:
            layer.compile(backend="inductor")
        forward = model
    else:
        forward = torch.compile(model, backend=backend) if backend != "none" else model
    ids = torch.randint(0, VOCAB, (batch, seq))

    def step() -> None:
        out = forward(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    start = time.time()
    step()
    first_step_s = round(time.time() - start, 1)
    gc.collect()
    peak = step_peak_bytes(step)
    resident = sum(p.numel() * p.element_size() for p in model.parameters())
    resident += sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                    if torch.is_tensor(t))
    return {"arch": arch, "method": method, "gc": gc_on, "backend": backend, "dtype": dtype_name, "batch": batch,
            "seq": seq, "peak_above_start_bytes": peak, "resident_bytes": resident, "first_step_s": first_step_s}


def total_peak_bytes(row: dict[str, Any]) -> int:
    """The step's peak with the weights and optimizer states: what torch.cuda.max_memory_allocated would read."""
    return int(row["peak_above_start_bytes"]) + int(row["resident_bytes"])


def pairs(rows: list[dict[str, Any]], backends: tuple[str, ...]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(eager row, compiled row) for every row of `backends` whose eager twin (backend none) was measured."""
    eager = {tuple(r[k] for k in KEY if k != "backend"): r for r in rows if r["backend"] == "none"}
    out = []
    for r in rows:
        twin = eager.get(tuple(r[k] for k in KEY if k != "backend"))
        if r["backend"] in backends and twin is not None:
            out.append((twin, r))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--backends", default="none,inductor,inductor_layers,eager,aot_eager,aot_eager_decomp_partition")
    ap.add_argument("--archs", default="llama,qwen2")
    ap.add_argument("--methods", default="full,lora")
    ap.add_argument("--gc", default="0,1")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # the machine is shared; the peak does not depend on it
    rows: list[dict[str, Any]] = json.loads(a.out.read_text()) if a.out.exists() else []
    for arch in a.archs.split(","):
        for method in a.methods.split(","):
            for gc_flag in a.gc.split(","):
                for backend in a.backends.split(","):
                    key = (arch, method, gc_flag == "1", backend, a.dtype, a.batch, a.seq)
                    if any(tuple(r[k] for k in KEY) == key for r in rows):
                        continue
                    row = measure(*key)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    a.out.write_text(json.dumps(rows, indent=1) + "\n")
    for eager, compiled in pairs(rows, ("inductor", "inductor_layers", "eager", "aot_eager",
                                        "aot_eager_decomp_partition")):
        e, c = total_peak_bytes(eager), total_peak_bytes(compiled)
        print(f"{compiled['arch']:6} {compiled['method']:5} gc={int(compiled['gc'])} {compiled['dtype']:8} "
              f"b{compiled['batch']}xs{compiled['seq']:<5} {compiled['backend']:27} {e:>11,} -> {c:>11,} "
              f"{100 * (c - e) / e:+6.1f} %")


if __name__ == "__main__":
    main()
