"""The measured training step: forward (loss), backward, optimizer step, zero_grad, run twice."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from vramcalc.trace._tracker import CATEGORIES, PHASES, MemoryTracker, tensors_of


@dataclass(frozen=True)
class TraceResult:
    """Live tensor memory of one steady-state training step, in integer bytes (512-byte rounded)."""

    peak_bytes: int
    peak_phase: str
    by_category_at_peak: dict[str, int]
    phase_peaks: dict[str, int]
    parameters: int
    trainable_parameters: int
    notes: tuple[str, ...] = ()
    peak_op: str = ""  # the aten op right after which the peak was seen (for debugging)

    @property
    def total_at_peak(self) -> int:
        return sum(self.by_category_at_peak.values())


ModuleArg = torch.nn.Module | Callable[[], torch.nn.Module]


def _fakeify(module: torch.nn.Module) -> torch.nn.Module:
    """Give a real or meta module fake storage (call inside the FakeTensorMode); ties are kept."""
    from torch._subclasses.fake_tensor import is_fake

    memo: dict[int, torch.Tensor] = {}
    for mod in module.modules():
        for name, p in list(mod._parameters.items()):
            if p is None or is_fake(p):
                continue
            if id(p) not in memo:
                memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="cpu"), requires_grad=p.requires_grad)
            mod._parameters[name] = memo[id(p)]
        for name, b in list(mod._buffers.items()):
            if b is None or is_fake(b):
                continue
            if id(b) not in memo:
                memo[id(b)] = torch.empty_like(b, device="cpu")
            mod._buffers[name] = memo[id(b)]
    return module


def _host_step_tensors(optimizer: torch.optim.Optimizer) -> Iterable[torch.Tensor]:
    """`state['step']` tensors that a CUDA run keeps on the host.

    torch/optim/adam.py and adamw.py `_init_group`: step is `torch.tensor(0.0)` (a CPU tensor) unless
    the group is `capturable` or `fused`, in which case it is a 0-dim tensor on the parameter's device.
    """
    for group in optimizer.param_groups:
        if group.get("fused") or group.get("capturable"):
            continue
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                yield step


def trace_module_step(
    module: ModuleArg,
    make_inputs: Callable[[], Any],
    loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    optimizer_factory: Callable[[torch.nn.Module], torch.optim.Optimizer],
    *,
    grad_accum: int = 1,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    fake_mode: FakeTensorMode | None = None,
    notes: Iterable[str] = (),
    switch: Callable[[int], None] | None = None,
    warmup_steps: int = 1,
) -> TraceResult:
    """Run two training steps under FakeTensorMode and report the second (steady state).

    `module` is a module (real, meta or fake) or a zero-argument factory called inside the fake
    mode. `make_inputs()` is called inside the fake mode for each micro-batch, so the inputs count
    as activations; `loss_fn(module, inputs)` returns the scalar loss and must not keep the model
    outputs alive (HF Trainer keeps only the loss). `optimizer_factory(module)` builds the optimizer.
    `switch(i)`, when given, runs before step i (a callback's on_step_begin, e.g. LISA's layer switch), and
    `warmup_steps` steps run before the reported one.
    """
    mode = fake_mode or FakeTensorMode(allow_non_fake_inputs=True)
    tracker = MemoryTracker()
    all_notes = list(notes)
    with mode:
        mod = module() if not isinstance(module, torch.nn.Module) else module
        mod = _fakeify(mod)
        mod.train()
        params = list(mod.parameters())
        n_params = sum(p.numel() for p in params)
        n_trainable = sum(p.numel() for p in params if p.requires_grad)
        optimizer = optimizer_factory(mod)

    for p in params:
        tracker.track(p, "parameters")
    for b in mod.buffers():
        tracker.track(b, "buffers")
    for p in params:
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda q: tracker.recategorize(q.grad, "gradients"))
    extra_states = getattr(optimizer, "extra_state_tensors", None)

    def one_step(i: int) -> None:
        if switch is not None:  # a callback's on_step_begin: what it allocates counts in the step's forward
            with tracker.in_phase("forward"):
                switch(i)
        for _ in range(grad_accum):
            with tracker.in_phase("forward"):
                inputs = make_inputs()
                ctx = autocast() if autocast is not None else contextlib.nullcontext()
                with ctx:
                    loss = loss_fn(mod, inputs)
                del inputs
            with tracker.in_phase("backward"):
                (loss / grad_accum if grad_accum > 1 else loss).backward()
                del loss
        with tracker.in_phase("optimizer_step"):
            optimizer.step()
            for t in tensors_of(optimizer.state.values()):
                tracker.recategorize(t, "optimizer_state")
            if extra_states is not None:
                for t in extra_states():
                    tracker.recategorize(t, "optimizer_state")
            for t in _host_step_tensors(optimizer):
                tracker.forget(t)
            optimizer.zero_grad(set_to_none=True)

    with mode, tracker:
        for i in range(warmup_steps):
            one_step(i)  # step 1 creates the optimizer states lazily
        tracker.recording = True
        tracker.reset_peaks()
        one_step(warmup_steps)  # the steady state we report

    peak = tracker.peak
    by_cat = {c: peak.by_category.get(c, 0) for c in CATEGORIES}
    all_notes.append("steady state: two steps run, the second reported (optimizer states exist before it)"
                     if warmup_steps == 1 else
                     f"{warmup_steps + 1} steps run, the last reported (optimizer states of the earlier ones exist)")
    return TraceResult(
        peak_bytes=peak.total_bytes,
        peak_phase=peak.phase,
        by_category_at_peak=by_cat,
        phase_peaks={ph: tracker.phase_peaks[ph] for ph in PHASES},
        parameters=n_params,
        trainable_parameters=n_trainable,
        notes=tuple(all_notes),
        peak_op=peak.op,
    )
