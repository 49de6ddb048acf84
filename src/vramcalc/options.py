"""The estimate options, declared once for every command that builds a TrainingSpec.

`estimate`, `fit` and `gpus --fits` take each option as one typed value; `compare` takes each as a
comma-separated list and runs the cross product. A run file (`--config`) supplies values too; an option
given on the command line overrides the file. Adding a TrainingSpec option is one entry in OPTIONS.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

import typer

from vramcalc.specs import LOSSES, METHODS, OPTIMIZERS, PRECISIONS

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Opt:
    """One estimate option: its TrainingSpec field, type (or choices), default and help."""

    name: str
    kind: type | tuple[str, ...]
    default: Any
    help: str
    sep: str = ","  # what separates the values of a list (compare)
    cli: str | None = None  # the flag when it differs from the field name (--gpus for gpus_per_node)

    @property
    def flag(self) -> str:
        return self.cli or "--" + self.name.replace("_", "-")


OPTIONS: tuple[Opt, ...] = (
    Opt("method", METHODS, "full", "Fine-tuning method."),
    Opt("precision", PRECISIONS, "bf16", "What weights, grads and optimizer states are stored in."),
    Opt("optimizer", OPTIMIZERS, "adamw", "Optimizer."),
    Opt(
        "optimizer_impl",
        ("fused", "foreach", "for-loop"),
        "fused",
        "Optimizer kernel: fused (no temporaries), foreach (PyTorch's CUDA default), for-loop.",
    ),
    Opt("batch_size", int, 1, "Micro-batch size per GPU."),
    Opt("seq_len", int, 512, "Sequence length in tokens."),
    Opt("grad_accum", int, 1, "Gradient accumulation steps."),
    Opt("grad_checkpointing", bool, False, "Gradient (activation) checkpointing."),
    Opt(
        "attention", ("sdpa", "eager"), "sdpa", "Attention kernel: sdpa (flash / memory-efficient) or eager."
    ),
    Opt("lora_rank", int, 16, "LoRA rank r."),
    Opt("lora_alpha", float, 32.0, "LoRA alpha (no effect on memory)."),
    Opt("lora_dropout", float, 0.0, "LoRA dropout (p > 0 keeps a copy of each adapted input)."),
    Opt("lora_targets", str, "q_proj,v_proj", "Comma-separated module names, or all-linear.", sep=";"),
    Opt("adapter_dtype", ("fp32", "bf16", "fp16"), "fp32", "LoRA adapter dtype."),
    Opt("quant_bits", int, 4, "QLoRA base: 4 (NF4) or 8 (int8)."),
    Opt("double_quant", bool, True, "QLoRA double quantization of the constants."),
    Opt("freeze_layers", int, None, "For --method freeze: layers frozen from the bottom."),
    Opt("train_head", bool, True, "For --method freeze: train the LM head."),
    # Multi-GPU and inference (memory/distributed.py, memory/inference.py).
    Opt("mode", ("train", "inference"), "train", "A training step, or serving (KV cache)."),
    Opt("gpus_per_node", int, 1, "GPUs per node (the verdict is per GPU).", cli="--gpus"),
    Opt("nodes", int, 1, "Nodes."),
    Opt("zero", int, 0, "DeepSpeed ZeRO stage: 0, 1 (optimizer states), 2 (+ gradients), 3 (+ parameters)."),
    Opt("fsdp", ("none", "full-shard", "shard-grad-op", "hybrid-shard", "no-shard"), "none",
        "PyTorch FSDP sharding strategy."),
    Opt("offload", ("none", "optimizer", "params"), "none",
        "CPU offload (ZeRO-Offload/Infinity, FSDP CPUOffload); params implies optimizer. Host RAM per node."),
    Opt("tp", int, 1, "Tensor-parallel degree."),
    Opt("pp", int, 1, "Pipeline-parallel degree."),
    Opt("sequence_parallel", bool, False, "Megatron sequence parallelism (with --tp)."),
    Opt("context", int, None, "Inference context in tokens (sets --seq-len)."),
    Opt("weight_dtype", ("auto", "fp32", "bf16", "fp16", "fp8", "int8", "gptq-int4", "awq-int4", "nf4"), "auto",
        "Inference weight format (auto: the precision's)."),
    Opt("kv_dtype", ("auto", "fp32", "bf16", "fp16", "fp8"), "auto",
        "Inference KV-cache dtype (auto: the compute dtype)."),
    Opt("quant_group_size", int, 128, "GPTQ/AWQ group size."),
    # Memory savers (memory/loss.py).
    Opt("loss", LOSSES, "hf",
        "Loss kernel: hf (full fp32 logits), chunked (torchtune CEWithChunkedOutputLoss), fused-linear "
        "(Liger LigerFusedLinearCrossEntropy), cut (Apple Cut Cross-Entropy)."),
    Opt("loss_chunks", int, 8, "For --loss chunked: output chunks (torchtune num_output_chunks)."),
    Opt("ac_every", int, 1, "With --grad-checkpointing: checkpoint every k-th layer (torchtune ac_mode "
        "selective, ac_option k); the others keep their activations."),
    Opt("activation_offload", bool, False, "Offload saved activations to host RAM (torchtune "
        "enable_activation_offloading, Unsloth 'unsloth' checkpointing, axolotl gradient_checkpointing: offload)."),
    Opt("optimizer_in_bwd", bool, False, "Step each parameter as its gradient lands, no full gradient buffer "
        "(torchtune optimizer_in_bwd)."),
)
BY_NAME = {o.name: o for o in OPTIONS}

_TRUE = {"true", "on", "yes", "1"}
_FALSE = {"false", "off", "no", "0"}


_CTX = "vramcalc_context"


class OptionError(ValueError):
    """A value that does not parse as its option's type (the CLI reports it as one line, exit 2)."""


def _annotation(o: Opt, multi: bool) -> Any:
    if multi:
        sep = "semicolon" if o.sep == ";" else "comma"
        extra = " Booleans: true,false." if o.kind is bool else ""
        return Annotated[
            str | None,
            typer.Option(
                o.flag, help=f"{o.help} A {sep}-separated list sweeps it.{extra}", show_default=False
            ),
        ]
    if isinstance(o.kind, tuple):
        base: Any = Literal[o.kind]
    elif o.default is None:
        base = o.kind | None
    else:
        base = o.kind
    if o.kind is bool:  # --grad-checkpointing / --no-grad-checkpointing (issue 2's option table)
        return Annotated[base, typer.Option(f"{o.flag}/--no-{o.flag[2:]}", help=o.help)]
    return Annotated[base, typer.Option(o.flag, help=o.help)]


def _coerce(o: Opt, raw: Any) -> Any:
    """One value from the command line or a run file, as the option's type."""
    if raw is None:
        return None
    if isinstance(o.kind, tuple):
        value = str(raw)
        if value not in o.kind:
            raise OptionError(f"{o.flag}: {value!r} is not one of {', '.join(o.kind)}")
        return value
    if o.kind is bool:
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise OptionError(f"{o.flag}: {raw!r} is not a boolean; use true or false")
    if o.kind is str:
        if isinstance(raw, list | tuple):
            return ",".join(str(x) for x in raw)
        return str(raw)
    try:
        if o.kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(raw)
        return float(raw)
    except (TypeError, ValueError):
        raise OptionError(
            f"{o.flag}: {raw!r} is not {'an integer' if o.kind is int else 'a number'}"
        ) from None


def split_values(o: Opt, text: str) -> list[Any]:
    """`1,2,4` → [1, 2, 4] for a list option (`;` separates LoRA target sets)."""
    parts = [p.strip() for p in text.split(o.sep) if p.strip()]
    if not parts:
        raise OptionError(f"{o.flag}: empty list")
    return list(dict.fromkeys(_coerce(o, p) for p in parts))


@dataclass
class OptionValues:
    """The estimate options as a command received them, and which were given on the command line."""

    values: dict[str, Any]
    given: set[str] = field(default_factory=set)
    multi: bool = False

    def run(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """One run's option values: defaults < run file `overrides` < command line."""
        out = {o.name: o.default for o in OPTIONS}
        for k, v in (overrides or {}).items():
            out[k] = _coerce(BY_NAME[k], v)
        for name in self.given:
            out[name] = (
                self.values[name] if not self.multi else split_values(BY_NAME[name], self.values[name])[0]
            )
        return out

    def sweep(self, base: Mapping[str, Any] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
        """The cross product of every listed option (compare): the varied names and one dict per run."""
        fixed = {o.name: o.default for o in OPTIONS}
        for k, v in (base or {}).items():
            fixed[k] = _coerce(BY_NAME[k], v)
        axes: list[tuple[str, list[Any]]] = []
        for o in OPTIONS:
            if o.name in self.given:
                values = split_values(o, self.values[o.name]) if self.multi else [self.values[o.name]]
                if len(values) == 1:
                    fixed[o.name] = values[0]
                else:
                    axes.append((o.name, values))
        runs = []
        for combo in itertools.product(*(vals for _, vals in axes)):
            run = dict(fixed)
            run.update(zip((n for n, _ in axes), combo, strict=True))
            runs.append(run)
        return [n for n, _ in axes], runs


def training_spec(values: Mapping[str, Any]) -> Any:
    """A TrainingSpec from option values (lora_targets as a comma-separated string or a list)."""
    from vramcalc.specs import TrainingSpec

    kw = dict(values)
    context = kw.pop("context", None)
    if context is not None:
        kw["seq_len"] = context  # inference: the context is the sequence the KV cache holds
    if kw.get("quant_bits") not in (4, 8):
        raise OptionError(f"--quant-bits must be 4 or 8, not {kw.get('quant_bits')}")
    targets = kw.get("lora_targets", "")
    if isinstance(targets, str):
        targets = targets.split(",")
    kw["lora_targets"] = tuple(x.strip() for x in targets if str(x).strip())
    return TrainingSpec(**kw)


def with_estimate_options(multi: bool = False) -> Callable[[F], F]:
    """Add every estimate option to a Typer command; the command receives them as `opts: OptionValues`."""

    def decorate(func: F) -> F:
        sig = inspect.signature(func, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "opts"]
        added = [
            inspect.Parameter(
                o.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None if multi else o.default,
                annotation=_annotation(o, multi),
            )
            for o in OPTIONS
        ]

        # Typer calls the command with keywords only: arguments, then these options, then the command's own.
        def is_argument(p: inspect.Parameter) -> bool:
            return any(
                isinstance(m, typer.models.ArgumentInfo) for m in getattr(p.annotation, "__metadata__", ())
            )

        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        params = [p for p in own if is_argument(p)] + added + [p for p in own if not is_argument(p)]

        # Typer injects the context into a parameter annotated typer.Context; it tells which options the
        # command line gave (so that they override a run file) from those left at their defaults. A
        # command that takes the context itself shares its parameter.
        own_ctx = next((p.name for p in own if p.annotation is typer.Context), None)
        if own_ctx is None:
            params.append(inspect.Parameter(_CTX, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            ctx = kwargs.get(own_ctx) if own_ctx else kwargs.pop(_CTX, None)
            values: dict[str, Any] = {}
            given: set[str] = set()
            for o in OPTIONS:
                values[o.name] = kwargs.pop(o.name, None if multi else o.default)
                source = ctx.get_parameter_source(o.name) if ctx is not None else None
                if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
                    given.add(o.name)
            return func(*args, opts=OptionValues(values, given, multi), **kwargs)

        del wrapper.__wrapped__  # typer must read the new signature, not the wrapped one
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate


def varied_label(names: Iterable[str]) -> list[str]:
    """Column labels for the varied options: the flag without its dashes (`batch-size`, `gpus`)."""
    return [BY_NAME[n].flag[2:] if n in BY_NAME else n.replace("_", "-") for n in names]
