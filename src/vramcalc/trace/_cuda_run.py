"""`vramcalc trace --device cuda`: the tracer's training step on a real GPU, measured by the real allocator.

The model is built exactly as for the fake-tensor trace (trace/_run.py: the transformers implementation
from a config, the method applied by peft; QLoRA's bitsandbytes storage emulated by trace/_hf.py
QuantLinear, the optimizer from trace/_optim.py), then given real CUDA storage with random weights
(`to_empty` + normal init: nothing is downloaded). It runs a warm-up step (the optimizer states appear),
resets the peak counters, and runs the measured steps as HF Trainer does (forward with labels, backward,
`optimizer.step()`, `zero_grad(set_to_none=True)`). It reads:

- `torch.cuda.max_memory_allocated()`: compare with the estimate's `tensor_peak_bytes`;
- `torch.cuda.max_memory_reserved()`: the caching allocator's segments, compare with `reserved_peak_bytes`;
- NVML's used memory of the device after the steps (what nvidia-smi shows: the reserved segments, the
  CUDA context and anything else on the GPU), from pynvml when installed, else `nvidia-smi`, else missing.

Fixed lengths: every micro-batch is batch × seq_len, no attention mask (as the tracer). Variable lengths:
the measured micro-batches are right-padded batches whose longest row is drawn from [seq_len / 2, seq_len],
shortest first and seq_len last (the peak is the longest batch's, the allocator has cached the shorter
shapes' blocks by then), with an attention mask, as a dynamically padded data collator produces.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from vramcalc.core.errors import BadInput, UnsupportedCombination
from vramcalc.core.specs import ModelSpec, TrainingSpec

NO_CUDA = ("--device cuda needs a CUDA GPU and torch.cuda.is_available() is False here; run `vramcalc trace` "
           "without --device for the fake-tensor trace, which needs no GPU")


@dataclass(frozen=True)
class CudaReading:
    """What the real allocator and NVML reported for the measured steps, in integer bytes."""

    max_allocated_bytes: int
    max_reserved_bytes: int
    nvml_used_bytes: int | None  # None when neither pynvml nor nvidia-smi is available
    nvml_source: str  # "pynvml", "nvidia-smi" or "missing: ..."
    lengths: tuple[int, ...]  # the padded length of each measured micro-batch
    environment: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"max_memory_allocated": self.max_allocated_bytes, "max_memory_reserved": self.max_reserved_bytes,
                "nvml_used": self.nvml_used_bytes, "nvml_source": self.nvml_source, "lengths": list(self.lengths),
                "environment": dict(self.environment), "notes": list(self.notes)}


def require_cuda() -> None:
    """BadInput (one line, exit 2) unless torch sees a CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise BadInput(NO_CUDA)


def measured_lengths(seq_len: int, variable: bool, steps: int, seed: int = 0) -> tuple[int, ...]:
    """Padded lengths of the measured micro-batches: all `seq_len`, or drawn shortest-first ending at seq_len."""
    if not variable:
        return (seq_len,) * steps
    import random

    rng = random.Random(seed)
    low = max(1, seq_len // 2)
    drawn = sorted(rng.randint(low, seq_len) for _ in range(max(0, steps - 1)))
    return (*drawn, seq_len)


def nvml_used_bytes(device_index: int, uuid: str | None = None) -> tuple[int | None, str]:
    """(used bytes, source) of one device from NVML: pynvml if importable, else nvidia-smi, else (None, why).

    `uuid` ("GPU-…", torch's device properties) names the device whatever CUDA_VISIBLE_DEVICES does to
    the indices; the index is the fallback.
    """
    failed = ""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                try:
                    handle = pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid else None
                except Exception:  # an unknown UUID form: use the index
                    handle = None
                if handle is None:
                    handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
                return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used), "pynvml"
            finally:
                pynvml.nvmlShutdown()
        except Exception as e:  # NVML raises its own NVMLError classes; fall back to nvidia-smi
            failed = f"pynvml failed ({type(e).__name__}); "
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None, f"missing: {failed}install pynvml (pip install nvidia-ml-py) or put nvidia-smi on PATH"
    for target in (uuid, str(device_index)):
        if target is None:
            continue
        proc = subprocess.run([smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", target],
                              capture_output=True, text=True, check=False, timeout=30)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines and lines[0].strip().isdigit():
            return int(lines[0].strip()) * 2**20, "nvidia-smi"  # MiB
    return None, f"missing: {failed}nvidia-smi did not report memory.used"


def environment(device_index: int = 0) -> dict[str, str]:
    """GPU, driver, CUDA, torch and library versions of this process, as strings."""
    import importlib.metadata as md

    import torch

    props = torch.cuda.get_device_properties(device_index)
    env = {"gpu": props.name, "gpu_memory_bytes": str(props.total_memory),
           "compute_capability": f"{props.major}.{props.minor}", "cuda": str(torch.version.cuda),
           "torch": torch.__version__}
    for lib in ("transformers", "peft", "bitsandbytes", "accelerate", "hqq"):
        try:
            env[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    env["driver"] = _driver_version()
    return env


def _driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # pynvml missing or failing: ask nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "unknown"
    proc = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                          text=True, check=False, timeout=30)
    return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "unknown"


class CudaBackend:
    """The torch.cuda and NVML calls the harness makes, on the current CUDA device (a test swaps in its own)."""

    def __init__(self) -> None:
        import torch

        self.device = torch.device("cuda", torch.cuda.current_device())

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)

    def reset_peaks(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.device)

    def peaks(self) -> tuple[int, int]:
        """(max_memory_allocated, max_memory_reserved) since the last reset."""
        import torch

        return int(torch.cuda.max_memory_allocated(self.device)), int(torch.cuda.max_memory_reserved(self.device))

    def nvml_used(self) -> tuple[int | None, str]:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(self.device), "uuid", None)
        return nvml_used_bytes(self.device.index or 0, f"GPU-{uuid}" if uuid is not None else None)

    def environment(self) -> dict[str, str]:
        return environment(self.device.index or 0)


def run_cuda(model: ModelSpec, training: TrainingSpec, *, variable_lengths: bool = False, steps: int = 2,
             seed: int = 0, backend: Any = None) -> CudaReading:
    """Run a warm-up step and `steps` measured steps of `training` on the current CUDA device."""
    if backend is None:
        require_cuda()
        backend = CudaBackend()
    import contextlib

    import torch

    from vramcalc.core.memory.precision import resolve_precision
    from vramcalc.trace._hf import build_model, model_dtype
    from vramcalc.trace._optim import make_optimizer
    from vramcalc.trace._run import _prepare

    if training.mode != "train":
        raise UnsupportedCombination("vramcalc trace measures training steps only (mode 'train')")
    from vramcalc.core.memory.classic import is_classic

    if is_classic(model):  # trace/_classic.py's models run on fake tensors only
        raise UnsupportedCombination(f"--device cuda builds transformers models; {model.name} is a {model.family}: "
                                     "drop --device cuda (the fake-tensor trace builds it)")
    if not model.has_architecture or model.vocab_size is None:
        raise UnsupportedCombination(f"{model.name} has no architecture; trace needs one")
    if training.activation_offload:
        raise UnsupportedCombination("--activation-offload is emulated by the fake-tensor trace only; drop it "
                                     "with --device cuda")
    if training.objective == "ppo":  # trace/_ppo.py: TRL 0.19.1's update loop on fake tensors
        raise UnsupportedCombination("--objective ppo is traced on fake tensors only (trace/_ppo.py): drop "
                                     "--device cuda")
    notes: list[str] = ["random weights from the config (normal, std 0.02); nothing downloaded"]
    precision = resolve_precision(training)
    torch.manual_seed(seed)
    device = backend.device
    hf, build_notes = build_model(model, training, model_dtype(precision))  # meta device
    notes.extend(build_notes)
    module = _prepare(hf, model, training, notes)
    module = module.to_empty(device=device)  # real storage; tied parameters stay tied (same Parameter)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                p.normal_(0.0, 0.02)
        for name, buf in module.named_buffers():
            if name.endswith("inv_freq") and buf.is_floating_point():  # rotary tables: only their values change
                buf.fill_(1e-4)  # (NaN-free activations); memory is the same
    if training.method == "qlora" and training.quant_backend == "hqq":
        notes.append("qlora hqq: hqq's own HQQLinear (trace/_hf.py quantize_blocks_hqq), its packed weight, scale "
                     "and zero given uninitialized CUDA storage (the same bytes; the values are not quantized)")
    elif training.method == "qlora":
        notes.append("qlora: bitsandbytes storage and dequantization allocations emulated (trace/_hf.py "
                     "QuantLinear), the same as the fake-tensor trace")
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer, opt_notes = make_optimizer(training, params, module)
    notes.extend(opt_notes)
    autocast: Any = contextlib.nullcontext
    if precision.startswith("amp-"):
        dtype = torch.bfloat16 if precision == "amp-bf16" else torch.float16
        autocast = lambda: torch.autocast("cuda", dtype=dtype)  # noqa: E731
    loss_fn = None
    if training.loss != "hf":
        from vramcalc.trace._loss import loss_function

        loss_fn = loss_function(training.loss, training.loss_chunks)
    vocab: int = model.vocab_size
    b: int = training.batch_size

    def micro_batch(length: int, padded: bool) -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (b, length), device=device)
        batch = {"input_ids": ids, "labels": ids.clone()}
        if padded:  # rows of random length up to `length`, right-padded (the longest row is `length`)
            rows = torch.randint(max(1, length // 2), length + 1, (b,), device=device)
            rows[0] = length
            mask = (torch.arange(length, device=device)[None, :] < rows[:, None]).long()
            batch["attention_mask"] = mask
            batch["labels"] = batch["labels"].masked_fill(mask == 0, -100)
        return batch

    def step(length: int) -> None:
        for _ in range(training.grad_accum):
            inputs = micro_batch(length, variable_lengths)
            with autocast():
                if loss_fn is not None:
                    loss = loss_fn(module, inputs)
                else:
                    loss = module(**inputs, use_cache=False).loss  # outputs dropped, as HF Trainer does
            del inputs
            (loss / training.grad_accum if training.grad_accum > 1 else loss).backward()  # type: ignore[no-untyped-call]
            del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    lengths = measured_lengths(training.seq_len, variable_lengths, steps, seed)
    step(lengths[0])  # warm-up: the optimizer states appear
    backend.synchronize()
    backend.reset_peaks()
    for length in lengths:
        step(length)
    backend.synchronize()
    allocated, reserved = backend.peaks()
    used, source = backend.nvml_used()
    if used is None:
        notes.append(f"NVML used memory {source}")
    if variable_lengths:
        notes.append("variable lengths: right-padded micro-batches with an attention mask, longest row drawn "
                     f"from [{max(1, training.seq_len // 2)}, {training.seq_len}], shortest step first")
    notes.append(f"warm-up step, then {len(lengths)} measured step(s); peak counters reset after the warm-up "
                 "(max_memory_reserved keeps the warm-up's segments, as a real run does)")
    return CudaReading(max_allocated_bytes=allocated, max_reserved_bytes=reserved, nvml_used_bytes=used,
                       nvml_source=source, lengths=lengths, environment=backend.environment(), notes=tuple(notes))
