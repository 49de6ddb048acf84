"""Shared output plumbing for the what-if commands: formats, colour, CSV, errors as one line."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import typer

OutFormat = Literal["table", "json", "yaml", "csv", "markdown"]


def one_line(e: BaseException) -> str:
    """A spec check as `--flag: msg` (the option's own flag); anything else with its whitespace collapsed."""
    from vramcalc.core.errors import SpecError

    if isinstance(e, SpecError) and e.field:
        from vramcalc.core.options import BY_NAME

        name = e.field
        flag = BY_NAME[name].flag if name in BY_NAME else "--" + name.replace("_", "-")  # --gpus for gpus_per_node
        return f"{flag}: {' '.join(e.message.split())}"
    return " ".join(str(e).split())


def fail(e: BaseException) -> typer.Exit:
    """Print `error: <problem>; <fix>` on stderr and return the exit-2 to raise."""
    typer.echo(f"error: {one_line(e)}", err=True)
    return typer.Exit(code=2)


def emit(doc: Mapping[str, Any], fmt: str) -> None:
    """JSON (json.dumps, byte-exact) or YAML of a document on stdout."""
    if fmt == "json":
        typer.echo(json.dumps(doc, indent=2))
    else:
        from vramcalc.io.formats import yaml_text

        typer.echo(yaml_text(doc), nl=False)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with a header; booleans as true/false, None as empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [
                "" if r.get(c) is None else str(r[c]).lower() if isinstance(r.get(c), bool) else r[c]
                for c in columns
            ]
        )
    return buf.getvalue()


def console(no_color: bool = False) -> Any:
    """rich Console for stdout; colour off with --no-color, NO_COLOR, or when stdout is not a terminal."""
    from rich.console import Console

    return Console(no_color=no_color or bool(os.environ.get("NO_COLOR")) or None, highlight=False)


def uses_colour(con: Any) -> bool:
    return bool(con.is_terminal and not con.no_color and con.color_system is not None)
