"""The run options as Typer options: built from core/options.py's table (declared once there)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import typer

from vramcalc.cli.helptext import with_choices
from vramcalc.core.options import BY_NAME, OPTIONS, Opt, OptionError, OptionValues, coerce

F = TypeVar("F", bound=Callable[..., Any])
# Every command that takes the run options takes --presets too (commands/estimate.py declares it among its
# own options for the fast front end; the others get it here).
PRESETS = Opt("preset_dirs", str, None, "Extra preset directory (models/*.yaml, gpus.yaml); repeatable; adds "
              "to and overrides the built-in presets, after VRAMCALC_PRESETS.", cli="--presets", multiple=True)
_CTX = "vramcalc_context"

# `--help` groups the run options into panels (the option table stays one list in core/options.py).
_PANEL_OF: dict[str, str] = {
    **dict.fromkeys(("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "adapter_dtype", "dora",
                     "modules_to_save", "lora_trainable_tokens", "quant_bits",
                     "quant_backend", "hqq_group_size", "hqq_axis",
                     "double_quant", "kbit_prep", "freeze_layers", "train_head", "train_layers",
                     "train_modules"), "LoRA, QLoRA and freeze"),
    **dict.fromkeys(("virtual_tokens", "encoder_hidden_size", "prefix_projection", "ia3_feedforward",
                     "oft_block_size", "trainable_tokens", "n_frequency", "boft_block_size", "boft_block_num",
                     "miss_rank", "c3a_block_size", "shira_rank", "adapter_len", "adapter_layers"),
                    "Other PEFT methods"),
    **dict.fromkeys(("gpus_per_node", "nodes", "zero", "fsdp", "offload", "tp", "tp_layout", "pp", "sequence_parallel",
                     "context_parallel", "grad_sync", "fsdp_frozen_grads"),
                    "Multi-GPU"),
    **dict.fromkeys(("mode", "context", "weight_dtype", "kv_dtype", "quant_group_size"), "Inference"),
    **dict.fromkeys(("loss", "loss_chunks", "ac_every", "ac_layout", "reentrant_gc", "ac_early_stop",
                     "activation_offload", "ac_offload", "optimizer_in_bwd", "kernels"), "Memory savers"),
    **dict.fromkeys(("objective", "prompt_len", "ref_model", "ref_dtype", "ref_quant", "reward_model", "reward_dtype",
                     "num_generations", "beta", "steps_per_generation", "num_iterations", "use_vllm",
                     "vllm_utilization", "vllm_sleep"),
                    "Preference and reward"),
}


def _panel(o: Opt) -> str:
    return _PANEL_OF.get(o.name, "Run" if o.name in BY_NAME else "Output and budget")


def _annotation(o: Opt, multi: bool) -> Any:
    if multi:
        # compare's own help says once that every option takes a comma-separated list; an option says so
        # only where its separator differs, and lists the values it takes (a boolean: true, false)
        values = o.kind if isinstance(o.kind, tuple) else ("true", "false") if o.kind is bool else ()
        text = with_choices(o.help, values) if values else o.help
        if o.sep != ",":
            text += " A semicolon-separated list sweeps it."
        return Annotated[
            str | None,
            typer.Option(o.flag, help=text, metavar="<list>", show_default=False, rich_help_panel=_panel(o)),
        ]
    extra: dict[str, Any] = {"rich_help_panel": _panel(o)}
    if o.complete is not None:
        from vramcalc.cli.common import complete_gpu, complete_model

        extra["autocompletion"] = complete_gpu if o.complete == "gpu" else complete_model
    if o.multiple:
        return Annotated[list[o.kind] | None, typer.Option(o.flag, help=o.help, **extra)]  # type: ignore[name-defined]
    if isinstance(o.kind, tuple):
        base: Any = Literal[o.kind]
    elif o.default is None:
        base = o.kind | None
    else:
        base = o.kind
    if o.kind is bool and o.negatable:  # --grad-checkpointing / --no-grad-checkpointing (issue 2's option table)
        return Annotated[base, typer.Option(f"{o.flag}/--no-{o.flag[2:]}", help=o.help, **extra)]
    return Annotated[base, typer.Option(o.flag, help=o.help, **extra)]


def with_estimate_options(multi: bool = False, own: tuple[Opt, ...] = ()) -> Callable[[F], F]:
    """Add every estimate option to a Typer command; the command receives them as `opts: OptionValues`.

    `own`: the command's own options from a table (estimate's, shared with the fast front end); the
    command receives them as `own: dict`.
    """

    def decorate(func: F) -> F:
        sig = inspect.signature(func, eval_str=True)
        own_params = [p for p in sig.parameters.values() if p.name not in ("opts", "own")]
        presets_here = not any(o.name == PRESETS.name for o in own)
        table = [
            inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default,
                              annotation=_annotation(o, False))
            for o in (own if not presets_here else (*own, PRESETS))
        ]
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

        own_params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own_params]
        params = [p for p in own_params if is_argument(p)] + added + table + [p for p in own_params
                                                                             if not is_argument(p)]

        # Typer injects the context into a parameter annotated typer.Context; it tells which options the
        # command line gave (so that they override a run file) from those left at their defaults. A
        # command that takes the context itself shares its parameter.
        own_ctx = next((p.name for p in own_params if p.annotation is typer.Context), None)
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
            # One check for every way in (the Typer commands and cli/fast.py's parser): Click parses
            # `inf`, `nan` and `1e309` as floats and takes an empty string, so each value given goes
            # through core.options.coerce, which refuses them naming the flag.
            for name in given:
                if not multi:
                    values[name] = coerce(BY_NAME[name], values[name])
            for o in own if not presets_here else (*own, PRESETS):
                if o.name in kwargs:
                    kwargs[o.name] = _checked(o, kwargs[o.name])
            for p in own_params:
                if not is_argument(p) and p.annotation is not typer.Context:
                    _refuse_empty(p, kwargs.get(p.name))
            if presets_here:
                from vramcalc.io import presets

                presets.use_dirs(kwargs.pop(PRESETS.name, None) or ())
            if own:
                kwargs["own"] = {o.name: kwargs.pop(o.name, o.default) for o in own}
            from vramcalc.cli.runs import stack_defaults

            return func(*args, opts=OptionValues(values, given, multi, stack_defaults), **kwargs)

        del wrapper.__wrapped__  # typer must read the new signature, not the wrapped one
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper  # type: ignore[return-value]

    return decorate




def _checked(o: Opt, value: Any) -> Any:
    """An own option's value through coerce (each of a repeatable option's values); None stays None."""
    if value is None:
        return None
    if o.multiple:
        return [coerce(o, v) for v in value]
    return coerce(o, value)


def _refuse_empty(p: inspect.Parameter, value: Any) -> None:
    """A command's own string option (compare's --gpu, fit's --config) given as '' is an error naming it."""
    # A plain string only: a list or pair may hold '' on purpose (explain --diff "" "--method qlora").
    if isinstance(value, str) and not value.strip():
        decls = [d for m in getattr(p.annotation, "__metadata__", ()) for d in getattr(m, "param_decls", ()) or ()]
        flag = next((d.split("/")[0] for d in decls if d.startswith("--")), "--" + p.name.replace("_", "-"))
        raise OptionError(f"{flag}: empty value")
