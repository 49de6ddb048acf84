"""torch.compile of the training step (`--compile`): the eager step's memory, as an upper bound.

How the tools compile: transformers 5.24's Trainer hands TrainingArguments' torch_compile_backend / _mode to
accelerate's TorchDynamoPlugin (trainer.py create_accelerator_and_postprocess), and accelerate's prepare_model runs
`torch.compile(model, backend=..., mode=...)` on the whole model, the loss inside its forward (accelerator.py);
axolotl passes its torch_compile keys on to TrainingArguments (core/builders/base.py _configure_torch_compile
@ 067b021c); torchtune's `compile: true` compiles each TransformerSelfAttentionLayer in place and the loss
(training/_compile.py compile_model, compile_loss @ bd2a0fc7). The optimizer step stays eager in all three.

What compiling changes (torch 2.13): AOTAutograd traces the joint forward-backward graph and splits it with
min_cut_rematerialization_partition (torch/_functorch/partitioners.py): it saves the cheapest cut of the graph that
its rules allow (matmuls and random ops are never recomputed), recomputing cheap pointwise ops in backward instead of
saving their outputs. Inductor fuses pointwise ops (their temporaries are never materialized) and frees each buffer
after its last use, the saved tensors too (AOTAutograd's boxed calling convention clears the backward's inputs).

Measured, not modelled: vramcalc's tracer cannot see a compiled step (Dynamo runs the eager function whenever a
TorchDispatchMode is on the stack: torch/_dynamo/convert_frame.py), so benchmarks/compile_peaks.py runs real steps on
the CPU, eager and compiled, and takes the peak of the CPU allocator's live bytes from torch.profiler's memory events
(benchmarks/results/compile_peaks.json; docs/accuracy.md). On every toy Llama / Qwen2 step there, full and LoRA, with
and without gradient checkpointing, fp32 and bf16, whole-model and per-layer compile, the compiled step's peak was at
most the eager step's. The saving depends on the graph and the shapes (which pointwise chains the partitioner
recomputes), so it is not subtracted: the estimate stays the eager step's and a note gives the measured range.

Not modelled, refused by the run-file readers: the CUDA-graph modes (`reduce-overhead`, `max-autotune`), whose
cudagraph trees keep every recorded graph's outputs and intermediates in a private pool across replays
(torch/_inductor/cudagraph_trees.py), and the debugging backends (`eager`, `aot_eager`, ...), which the same
measurement puts above the eager step. Standard library only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import TrainingSpec

SOURCE = ("torch 2.13 torch/_functorch/partitioners.py min_cut_rematerialization_partition, inductor; measured: "
          "benchmarks/compile_peaks.py")
# The compiled step's tensor peak below the eager step's, in percent of the eager peak (weights, gradients and AdamW
# states included), by the toy's weight dtype: the least and the most over the inductor rows (whole-model and
# per-layer) of benchmarks/results/compile_peaks.json (tests/test_compile.py recomputes them from the file).
GAP_RANGE_PERCENT = {"fp32": (0.0, 19.1), "bf16": (37.4, 47.7)}


def note() -> str:
    """The approximation `--compile` makes, in words."""
    ranges = ", ".join(f"{low:.1f}-{high:.1f} % with {dtype} weights"
                       for dtype, (low, high) in GAP_RANGE_PERCENT.items())
    return ("approximate: --compile (torch.compile, inductor) is estimated as the eager step, an upper bound: on toy "
            f"Llama / Qwen2 training steps measured on the CPU the compiled step peaked below eager, {ranges} "
            "(AOTAutograd's min-cut partitioner recomputes pointwise ops in backward, inductor fuses them and frees "
            "buffers at their last use; benchmarks/compile_peaks.py)")


def annotate(b: Breakdown, training: TrainingSpec) -> Breakdown:
    """`b` with the --compile note, once (nested estimates of the same run add it only once)."""
    from dataclasses import replace

    if not training.compile:
        return b
    text = note()
    return b if text in b.notes else replace(b, notes=(*b.notes, text))
