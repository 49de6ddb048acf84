"""`vramcalc models`: the model presets with their parameter counts."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vramcalc.cli.common import (
    FormatOpt,
    PresetsOpt,
    rich_console,
)
from vramcalc.cli.output import csv_text, echo, emit, fail


def models(
    match: Annotated[str | None, typer.Argument(
        help="Only the presets whose name, family, display name or alias contains this text (any case).")] = None,
    fmt: FormatOpt = "table",
    preset_dirs: PresetsOpt = None,
) -> None:
    """List the model presets with their parameter counts. Example: vramcalc models qwen"""
    from vramcalc.core.errors import VramcalcError
    from vramcalc.core.params import count_params
    from vramcalc.core.specs import ModelSpec
    from vramcalc.io import presets

    try:
        specs = [s for s in presets.models(preset_dirs or ()).specs if isinstance(s, ModelSpec)]
    except VramcalcError as e:
        raise fail(e) from None
    rows: list[dict[str, Any]] = [{"name": s.name, "display_name": s.display_name or s.name, "family": s.family,
             "parameters": count_params(s), "aliases": list(s.aliases), "source": s.source} for s in specs]
    if match is not None:
        needle = match.strip().lower()
        rows = [r for r in rows if any(needle in str(x).lower()
                                       for x in (r["name"], r["family"], r["display_name"], *r["aliases"]))]
        if not rows:
            raise fail(VramcalcError(f"no model preset matches {match!r}; run `vramcalc models` for the whole list"))
    rows.sort(key=lambda r: (r["family"], r["parameters"]))
    if fmt in ("json", "yaml"):
        emit({"models": rows}, fmt)
        return
    if fmt == "csv":
        columns = ["name", "display_name", "family", "parameters", "source"]
        echo(csv_text(columns, rows), nl=False)
        return
    if fmt == "markdown":
        lines = ["| name | family | parameters |", "| --- | --- | ---: |"]
        lines += [f"| {r['name']} | {r['family']} | {r['parameters']:,} |" for r in rows]
        echo("\n".join(lines))
        return
    from rich.table import Table

    tbl = Table("name", "family", "parameters", "Hugging Face id", show_edge=False)
    for r in rows:
        hf = next((a for a in r["aliases"] if "/" in a), "")
        tbl.add_row(r["name"], r["family"], f"{r['parameters']:,}", hf)
    rich_console().print(tbl)


