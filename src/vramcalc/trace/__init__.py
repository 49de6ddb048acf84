"""Measure one real training step of a transformers model under FakeTensorMode.

What is modelled
----------------
`trace(model, training)` builds the Hugging Face implementation of `model.family` from a config
object (never from the hub), with fake weights (FakeTensorMode: shapes, dtypes and strides, no
data, no allocation), applies the fine-tuning method (full, LoRA via peft, QLoRA with an emulated
bitsandbytes storage, freeze), and runs the step as HF Trainer does: `model.train()`, forward with
`labels` (HF causal-LM loss; the model output is dropped, only the loss is kept), `loss.backward()`
(repeated `grad_accum` times, gradients accumulating), `optimizer.step()`,
`optimizer.zero_grad(set_to_none=True)`. Two steps run; the second is reported, so the optimizer
states exist (steady state). No attention mask is passed (packed, unpadded batches), so the causal
mask is never materialised and sdpa runs with `is_causal=True`. `use_cache=False`.

Memory is the sum of live tensor storages, each counted once (views share storage) and rounded
up to 512 bytes (c10/cuda/CUDACachingAllocator.cpp kMinBlockSize). This is `memory_allocated()`,
not `memory_reserved()`: allocator fragmentation, the CUDA context, cuBLAS workspaces and
kernel-internal scratch not allocated through the caching allocator are not included. Categories:
parameters (incl. quantized weights), buffers (incl. quantization constants, rotary tables),
gradients (`.grad` tensors), optimizer_state (states, master weights), activations (created in the
forward phase and still alive) and temporaries (created in backward or the optimizer step; with
gradient checkpointing the recomputed activations are temporaries).

CUDA behaviours reproduced on the fake cpu device (fake `cuda` tensors abort in the autograd engine
of a CPU-only torch): see `_cuda.py` (dropout's fused kernel with a 1-byte mask, flash /
memory-efficient sdpa allocations, CUDA autocast op lists and weight-cast cache) and `_optim.py`
(foreach AdamW made explicit since torch only defaults to it on CUDA; optimizer `step` counters
that a CUDA run keeps on the host are not counted). transformers' `is_tracing()` is true for fake
tensors, which only matters when a padding mask is passed (we pass none).

Limitations
-----------
GradScaler for fp16 amp is not run (its state is a few scalars). cuDNN attention is not modelled
(flash is preferred on sm80+). The memory-efficient attention backward workspace is approximated.
paged optimizers are counted as resident. lion is not implemented. QLoRA follows bitsandbytes'
storage and autograd (MatMul4Bit saves only the quantized weight), not peft's
`prepare_model_for_kbit_training` (which upcasts non-quantized weights to fp32).
"""

from __future__ import annotations

from typing import Any

from vramcalc.core.errors import VramcalcError
from vramcalc.core.specs import ModelSpec, TrainingSpec

__all__ = ["TraceResult", "hf_config_dict", "trace", "trace_cuda", "trace_module_step"]

_MISSING = "vramcalc trace needs the 'trace' extra: pip install '.[trace]' (from a checkout of the repository)"


def _require(*modules: str) -> None:
    import importlib

    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError:
            raise VramcalcError(_MISSING) from None


def hf_config_dict(model: ModelSpec) -> dict[str, Any]:
    """Map a ModelSpec to transformers config kwargs, with `model_type` (pure; no torch needed)."""
    from vramcalc.trace._config import hf_config_dict as impl

    return impl(model)


def trace_module_step(*args: Any, **kwargs: Any) -> Any:
    """Trace two steps of any module (see `vramcalc.trace._step.trace_module_step`)."""
    _require("torch")
    from vramcalc.trace._step import trace_module_step as impl

    return impl(*args, **kwargs)


def trace(model: ModelSpec, training: TrainingSpec) -> Any:
    """Run one steady-state training step of `model` under FakeTensorMode; return a TraceResult."""
    _require("torch", "transformers")
    if training.objective == "ppo":  # TRL 0.19.1 PPOTrainer's own update loop (trace/_ppo.py)
        from vramcalc.trace._ppo import trace_ppo

        return trace_ppo(model, training)
    from vramcalc.trace._run import trace as impl

    return impl(model, training)


def trace_cuda(model: ModelSpec, training: TrainingSpec, *, variable_lengths: bool = False, steps: int = 2) -> Any:
    """Run the same training step on the real CUDA device (random weights); return a CudaReading.

    Refuses in one line (BadInput, exit 2) without a CUDA device (see `vramcalc.trace._cuda_run`).
    """
    _require("torch", "transformers")
    from vramcalc.trace._cuda_run import run_cuda

    return run_cuda(model, training, variable_lengths=variable_lengths, steps=steps)


def __getattr__(name: str) -> Any:
    if name == "TraceResult":
        _require("torch")
        from vramcalc.trace._step import TraceResult

        return TraceResult
    raise AttributeError(name)
