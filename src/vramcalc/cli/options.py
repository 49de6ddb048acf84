"""The run options as Typer options: built from core/options.py's table (declared once there)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import typer

from vramcalc.core.options import OPTIONS, Opt, OptionValues

F = TypeVar("F", bound=Callable[..., Any])
_CTX = "vramcalc_context"


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


