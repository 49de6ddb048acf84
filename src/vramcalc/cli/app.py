"""The Typer app: the root, one error boundary, and the commands (cli/commands/, one module each).

Exit codes: 0 success; 1 with --check when the run does not fit the GPU; 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from vramcalc import __version__
from vramcalc.cli.commands import estimate as estimate_cmd
from vramcalc.cli.common import EPILOG, complete_model
from vramcalc.cli.options import with_estimate_options
from vramcalc.cli.output import boundary, echo
from vramcalc.core.errors import VramcalcError
from vramcalc.core.options import OptionValues


class _Help:
    """`--help` laid out by cli/helptext.py (names never cut, choices never split, flags without `<bool>`)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from vramcalc.cli.helptext import render

        render(self, ctx)


class HelpCommand(_Help, TyperCommand):
    """Every command (cli/app.py's _register gives it to each)."""


class HelpGroup(_Help, TyperGroup):
    """Every group of commands (`vramcalc`, `vramcalc presets`)."""


class _Boundary(HelpGroup):
    """The error boundary (output.boundary) around every command: a VramcalcError is one line, exit 2.

    It sits in the group's invoke, so it holds for the console entry point and under CliRunner alike.
    """

    def invoke(self, ctx: Any) -> Any:
        with boundary():
            _no_repeats(self, ctx)
            _bare_booleans(self, ctx)
            return super().invoke(ctx)


def _bare_booleans(group: Any, ctx: Any) -> None:
    """compare takes each boolean as a list (--grad-checkpointing true,false); the flag form used everywhere
    else means true (--no-X: false) and must not take the next argument as its value: the model when none
    came before, an option, or nothing."""
    from vramcalc.core.options import OPTIONS, split_values

    protected = "_protected_args" if hasattr(ctx, "_protected_args") else "protected_args"
    args = [*getattr(ctx, protected), *ctx.args]
    if args[:1] != ["compare"]:
        return
    flags = {o.flag: o for o in OPTIONS if o.kind is bool}
    valued = {f for p in group.get_command(ctx, "compare").params if p.param_type_name == "option"
              and not p.is_flag for f in p.opts} - set(flags)
    out: list[str] = []
    positional = False
    i = 1
    out.append(args[0])
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            out += args[i - 1:]
            break
        negated = token.startswith("--no-") and "--" + token[5:] in flags
        o = flags.get("--" + token[5:] if negated else token)
        if o is None:
            out.append(token)
            if token in valued and i < len(args):
                out.append(args[i])
                i += 1
            elif not token.startswith("-"):
                positional = True
            continue
        out.append(o.flag)
        if negated:
            out.append("false")
            continue
        try:
            listed = i < len(args) and bool(split_values(o, args[i]))
        except VramcalcError:
            listed = False
        if not listed and (i >= len(args) or args[i].startswith("-") or not positional):
            out.append("true")
    setattr(ctx, protected, out[:1])
    ctx.args = out[1:]


def _no_repeats(group: Any, ctx: Any) -> None:
    """A single-valued option given twice is an error: Click would keep the last one silently."""
    from vramcalc.core.errors import BadInput

    args = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
    cmd = group.get_command(ctx, args[0]) if args else None
    if cmd is None:
        return
    names: dict[str, Any] = {}
    for p in cmd.params:
        if getattr(p, "multiple", False) or getattr(p, "count", False) or p.param_type_name != "option":
            continue
        for flag in (*p.opts, *p.secondary_opts):
            names[flag] = p
    seen: dict[str, str] = {}
    i = 1
    while i < len(args):
        token = args[i]
        i += 1
        if token == "--":
            break
        flag = token.split("=", 1)[0]
        p = names.get(flag)
        if p is None:
            continue
        if not p.is_flag and "=" not in token:
            i += 1  # its value
        if p.name in seen:
            raise BadInput(f"{flag} given twice: pass it once (only one value is used)")
        seen[p.name] = flag


app = typer.Typer(
    name="vramcalc",
    cls=_Boundary,
    help="Will this fine-tune fit on my GPU? Per-component GPU memory of a training step, and a verdict.",
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        echo(f"vramcalc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", "-V", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Will this fine-tune fit on my GPU? Example: vramcalc estimate mistral-7b --method full --gpu rtx4090"""


@with_estimate_options(own=estimate_cmd.OWN_OPTIONS)
def estimate(
    model: Annotated[str | None, typer.Argument(help="Model preset name, alias, Hugging Face id or "
                                                "config.json path (or `model:` in --config).",
                                                autocompletion=complete_model)] = None,
    *,
    opts: OptionValues,
    own: dict[str, Any],
) -> None:
    """Estimate the GPU memory of one training step, per component, with a fit verdict.

    Example: vramcalc estimate mistral-7b --method full --gpu rtx4090
    """
    raise SystemExit(estimate_cmd.run(model, opts, own))



def _register() -> None:
    from vramcalc.cli.commands import compare, explain, fit, gpus, models, plot, presets, show, storage, trace

    app.command("estimate", epilog=EPILOG)(estimate)
    app.command("models")(models.models)
    app.command("gpus", epilog=EPILOG)(gpus.gpus)
    app.command("show")(show.show)
    app.command("explain", epilog=EPILOG)(explain.explain)
    app.command("storage", epilog=EPILOG)(storage.storage)
    app.command("compare", epilog=EPILOG)(compare.compare)
    app.command("fit", epilog=EPILOG)(fit.fit_command)
    app.command("trace", epilog=EPILOG)(trace.trace_command)  # torch is imported only when it runs
    app.command("timeline", epilog=EPILOG)(plot.timeline_command)  # the pictures only when it draws
    app.add_typer(presets.presets_app, name="presets", cls=HelpGroup)
    for group in [app, *(info.typer_instance for info in app.registered_groups if info.typer_instance)]:
        for info in group.registered_commands:
            if info.cls in (None, TyperCommand):  # typer's default class; a command's own class stays
                info.cls = HelpCommand


_register()


def _not_modelled(e: Exception) -> str | None:
    """A choice people ask for that is not modelled (core/vocab.py NOT_MODELLED): the one line that says why, in
    place of Click's list of choices."""
    from vramcalc.core.vocab import NOT_MODELLED

    param = getattr(e, "param", None)
    name = getattr(param, "name", None)
    if name not in NOT_MODELLED:
        return None
    words = (w.lower() for a in sys.argv[1:] for w in a.split("=", 1)[-1:])  # `--objective ppo`, `--objective=ppo`
    given = [w for w in words if w in NOT_MODELLED[name]]
    flag = "--" + name.replace("_", "-")
    return f"{flag} {given[0].lower()} is not modelled: {NOT_MODELLED[name][given[0].lower()]}" if given else None


def main() -> None:
    """Run the Typer app: Click's usage errors become one line on stderr with exit code 2."""
    try:  # recent typer vendors click as typer._click; older releases use click itself
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click.exceptions import UsageError  # type: ignore[assignment]

    try:
        code = app(standalone_mode=False)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `vramcalc` alone: the help was printed
            sys.exit(0)
        hint = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
        message = " ".join(e.format_message().replace("Value error, ", "").split())
        message = _not_modelled(e) or message
        echo(f"error: {message}{hint}", err=True)
        sys.exit(2)
    except typer.Abort:
        echo("error: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
