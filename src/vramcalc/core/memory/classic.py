"""The course texts' classics (issue 15): a training step of torchvision's ResNet family (memory/convnet.py) or an
LSTM language model (memory/rnn.py), in bytes.

Each model is a list of units in forward order, each with what autograd keeps of its forward (its saved tensors
and, under autocast, its 16-bit weight copies), its parameters' gradients and its transients. The step is walked as
PyTorch runs it (steady state, step 2, zero_grad(set_to_none=True)): the forward adds each unit's saved tensors;
the backward reaches the units in reverse, each freeing its saved tensors once its gradients exist; the optimizer
step holds every gradient and the step's temporaries (memory/optimizer.py). Standard library only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vramcalc.core.errors import UnsupportedCombination
from vramcalc.core.memory import convnet, rnn
from vramcalc.core.memory.convnet import Unit, blk
from vramcalc.core.params import ParamTensor
from vramcalc.core.vocab import CLASSIC_FAMILIES

if TYPE_CHECKING:
    from vramcalc.core.memory import Breakdown
    from vramcalc.core.specs import ModelSpec, TrainingSpec

# What a classic run may set: the rest of TrainingSpec (LoRA, checkpointing, parallelism, sequence options...)
# changes memory in ways modelled only for transformers, so a changed value is refused in one line.
_COMMON = ("mode", "method", "precision", "optimizer", "optimizer_impl", "batch_size", "grad_accum")
ALLOWED = {"resnet": (*_COMMON, "image_size", "num_classes"), "lstm": (*_COMMON, "seq_len")}
OPTIMIZERS = ("adamw", "sgd", "sgd-momentum")
PRECISIONS = {"resnet": ("auto", "fp32", "amp-bf16", "amp-fp16"), "lstm": ("auto", "fp32")}
KIND = {"resnet": "a ResNet", "lstm": "an LSTM language model"}


def is_classic(m: ModelSpec) -> bool:
    return m.family in CLASSIC_FAMILIES


def tensors(m: ModelSpec) -> tuple[ParamTensor, ...]:
    """Every parameter tensor (params.inventory dispatches here)."""
    from vramcalc.core.params import inventory

    return inventory(m)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check(m: ModelSpec, t: TrainingSpec) -> None:
    """UnsupportedCombination, in one line, for what a classic run does not model."""
    from vramcalc.core.checks import _changed, _defaults

    kind = KIND[m.family]
    if t.mode != "train":
        raise UnsupportedCombination(f"--mode {t.mode} is modelled for transformers; {m.name} is {kind}: estimate "
                                     "a training step (--mode train)")
    if t.method != "full":
        raise UnsupportedCombination(f"--method {t.method} is not modelled for {m.name} ({kind}): use --method full")
    if t.precision not in PRECISIONS[m.family]:
        raise UnsupportedCombination(f"--precision {t.precision} is not modelled for {m.name} ({kind}): use "
                                     f"{' or '.join(p for p in PRECISIONS[m.family] if p != 'auto')}")
    if t.optimizer not in OPTIMIZERS:
        raise UnsupportedCombination(f"--optimizer {t.optimizer} is not modelled for {m.name} ({kind}): use "
                                     f"{', '.join(OPTIMIZERS)}")
    names = tuple(n for n in _defaults(type(t)) if n not in ALLOWED[m.family])
    changed = _changed(t, names)
    if changed:
        raise UnsupportedCombination(f"{', '.join(map(_flag, changed))}: not modelled for {m.name} ({kind}); "
                                     f"drop {'them' if len(changed) > 1 else 'it'}")


def check_not_classic(t: TrainingSpec) -> None:
    """--image-size and --num-classes size a ResNet: refused for any other model (they would change nothing)."""
    from vramcalc.core.checks import _changed

    changed = _changed(t, ("image_size", "num_classes"))
    if changed:
        verb = "size" if len(changed) > 1 else "sizes"
        raise UnsupportedCombination(f"{' and '.join(map(_flag, changed))} {verb} a ResNet's input and classifier; "
                                     "this model has neither: drop them")


def _recipe(t: TrainingSpec) -> tuple[str, bool, int]:
    """(precision, autocast, activation bytes): `auto` is fp32, a plain PyTorch training loop's default."""
    precision = "fp32" if t.precision == "auto" else t.precision
    autocast = precision.startswith("amp-")
    return precision, autocast, 2 if autocast else 4


def units(m: ModelSpec, t: TrainingSpec) -> list[Unit]:
    _, autocast, c = _recipe(t)
    if m.family == "resnet":
        return convnet.units(m, t.batch_size, t.image_size, c, autocast)
    return rnn.units(m, t.batch_size, t.seq_len, c)


_FWD = (("gradients (accumulating)", "gradients"), ("saved activations", "activations"),
        ("autocast weight copies", "activations"), ("forward inputs", "activations"),
        ("forward temporaries", "temporaries"))
_BWD = (("gradients", "gradients"), ("saved activations", "activations"), ("autocast weight copies", "activations"),
        ("backward temporaries", "temporaries"))
_STEP = (("gradients", "gradients"), ("step temporaries", "temporaries"))


def estimate(model: ModelSpec, training: TrainingSpec) -> Breakdown:
    """Per-component and per-phase memory of one training step of a ResNet or an LSTM language model."""
    from vramcalc.core.memory import Breakdown
    from vramcalc.core.memory.optimizer import optimizer_bytes
    from vramcalc.core.memory.overhead import runtime_overhead
    from vramcalc.core.memory.precision import RECIPES

    check(model, training)
    m = replace(model, num_classes=training.num_classes) if model.family == "resnet" else model
    precision, autocast, _ = _recipe(training)
    recipe = RECIPES[precision]  # type: ignore[index]
    params = tensors(m)
    n_params = sum(p.numel for p in params)
    weights = sum(blk(4 * p.numel) for p in params)  # fp32 weights, one allocation each
    if m.family == "resnet":
        weights += convnet.buffer_bytes(m)
    t = replace(training, precision=precision) if training.precision == "auto" else training
    opt = optimizer_bytes(tuple((p.shape, 1) for p in params), recipe, t, m)
    states, step_temp = opt.total, opt.step_temporaries
    us = units(m, training)
    all_grads = sum(u.grads for u in us)
    accum = training.grad_accum > 1
    best_fwd: tuple[int, ...] = ()
    keep = 0
    for i, u in enumerate(us):
        keep += u.fwd_keep
        values = (all_grads if accum else 0, sum(x.saved for x in us[:i + 1]), sum(x.copies for x in us[:i + 1]),
                  keep, u.fwd_temp)
        if not best_fwd or sum(values) > sum(best_fwd):
            best_fwd = values
    best_bwd: tuple[int, ...] = ()
    later_grads = 0
    for i in range(len(us) - 1, -1, -1):
        u = us[i]
        # start: the unit's saved tensors alive, its gradients not yet; end: its gradients exist, its saved
        # tensors are released (autograd frees a node's saved variables once it has run)
        starts = u.bwd_start + (u.accum_start if accum else 0)
        ends = u.bwd_end + (u.accum_end if accum else 0)
        for grads, upto, temp in ((later_grads, i + 1, starts), (later_grads + u.grads, i, ends)):
            values = (all_grads if accum else grads, sum(x.saved for x in us[:upto]),
                      sum(x.copies for x in us[:upto]), max(temp, 0))
            if not best_bwd or sum(values) > sum(best_bwd):
                best_bwd = values
        later_grads += u.grads
    end = (all_grads, 0, 0, 0)
    if sum(end) > sum(best_bwd):
        best_bwd = end
    raw = (("forward.all", _FWD, best_fwd), ("backward.all", _BWD, best_bwd),
           ("optimizer_step.step", _STEP, (all_grads, step_temp)))
    base = weights + states
    phases = {key.split(".")[0]: base + sum(values) for key, _, values in raw}
    tensor_peak = max(phases.values())
    runtime = runtime_overhead(tensor_peak)
    activations = sum(u.saved + u.copies for u in us)
    peak_raw = max(raw, key=lambda r: sum(r[2]))
    temporaries = sum(v for (_, comp), v in zip(peak_raw[1], peak_raw[2], strict=True) if comp == "temporaries")
    details = {f"activations.{u.name}": u.saved + u.copies for u in us}
    details.update(runtime.details())
    notes: list[str] = []
    if training.precision == "auto":
        notes.append(f"precision auto → fp32 for {model.name}: a plain PyTorch training loop keeps fp32 weights; pass "
                     "--precision amp-bf16 for torch.autocast" if model.family == "resnet" else
                     f"precision auto → fp32 for {model.name}: a plain PyTorch training loop keeps fp32 weights")
    if model.family == "lstm":
        notes.append(rnn.NOTE)
    else:
        notes.append(f"{model.name}: {training.batch_size} image(s) of {training.image_size}x{training.image_size}, "
                     f"{training.num_classes} classes; BatchNorm in training mode (per-channel statistics saved)")
    if accum:
        notes.append(f"gradient accumulation over {training.grad_accum} micro-batches: gradients stay allocated "
                     "through every forward and backward.")
    return Breakdown(
        model=model.name, parameters=n_params, trainable_parameters=n_params, weights=weights,
        gradients=all_grads, optimizer_state=states, activations=activations, temporaries=temporaries,
        overhead=runtime.total, phases=phases, details=details, notes=tuple(notes), activations_modeled=True,
        active_parameters=n_params, moments=tuple(raw),  # type: ignore[arg-type]
    )
