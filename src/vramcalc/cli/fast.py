"""The `estimate` command line parsed without Typer, from the same option tables Typer is built from.

A person at a terminal should get `vramcalc estimate mistral-7b --gpu rtx4090` before they notice, and
importing Typer, rich and pydantic costs more than the whole answer. The entry point (cli/__init__.py)
hands an `estimate` command line here first. The parser is generated from core/options.py's OPTIONS and
commands/estimate.py's OWN_OPTIONS, the tables cli/options.py builds Typer's signature from, and the
result goes to the same function the Typer command calls (commands/estimate.run). Anything this parser
does not take exactly as Click would (help, an unknown or repeated option, a value it cannot convert, a
value that starts with a dash, `--`) returns None, and Typer parses the command line instead, so usage
errors read the same whichever way a command line comes in.
"""

from __future__ import annotations

from typing import Any

from vramcalc.core.options import OPTIONS, Opt, OptionError, OptionValues, coerce


def _flags(table: tuple[Opt, ...]) -> dict[str, tuple[Opt, Any]]:
    """flag -> (option, the value a bare boolean flag sets; None for options that take a value)."""
    out: dict[str, tuple[Opt, Any]] = {}
    for o in table:
        if o.kind is bool:
            out[o.flag] = (o, True)
            if o.negatable:
                out["--no-" + o.flag[2:]] = (o, False)
        else:
            out[o.flag] = (o, None)
    return out


def parse(argv: list[str], own_table: tuple[Opt, ...]) -> tuple[str | None, OptionValues, dict[str, Any]] | None:
    """(model, run options, own options) of an `estimate` command line, or None to let Typer parse it."""
    flags = _flags(OPTIONS + own_table)
    run_names = {o.name for o in OPTIONS}
    values: dict[str, Any] = {o.name: o.default for o in OPTIONS}
    own: dict[str, Any] = {o.name: o.default for o in own_table}
    seen: set[str] = set()
    model: str | None = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            if model is not None:
                return None
            model = arg
            continue
        name, eq, text = arg.partition("=")
        if name not in flags:
            return None  # -h, --help, --, anything unknown: Typer answers
        o, flag_value = flags[name]
        if flag_value is not None:
            if eq:
                return None
            value: Any = flag_value
        else:
            if not eq:
                if i >= len(argv):
                    return None
                text = argv[i]
                i += 1
            if text.startswith("-") and o.kind not in (int, float):
                return None
            try:
                value = coerce(o, text)
            except OptionError:
                return None
        if o.name in seen and not o.multiple:
            return None
        seen.add(o.name)
        target = values if o.name in run_names else own
        target[o.name] = (target[o.name] or []) + [value] if o.multiple else value
    from vramcalc.cli.runs import stack_defaults

    return model, OptionValues(values, seen & run_names, multi=False, stacks=stack_defaults), own
