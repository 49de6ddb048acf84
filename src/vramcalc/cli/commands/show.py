"""`vramcalc show`: a model's architecture and its parameter count broken down."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from vramcalc.cli.common import (
    MODEL_HELP,
    FormatOpt,
    PresetsOpt,
    complete_model,
    rich_console,
)
from vramcalc.cli.output import csv_text, echo, emit, fail


def show(
    model: Annotated[str, typer.Argument(help=MODEL_HELP, autocompletion=complete_model)],
    fmt: FormatOpt = "table",
    preset_dirs: PresetsOpt = None,
) -> None:
    """Show a model's architecture and its parameter count broken down. Example: vramcalc show mistral-7b"""
    from vramcalc.core.errors import VramcalcError
    from vramcalc.core.params import active_params, count_params, params_by_name
    from vramcalc.io.resolve import resolve_model

    try:
        spec, model_notes = resolve_model(model, None, preset_dirs or ())
    except VramcalcError as e:
        raise fail(e) from None
    breakdown = params_by_name(spec)
    total = count_params(spec)
    doc = {"model": spec.name, "architecture": asdict(spec),
           "parameters": total, "active_parameters": active_params(spec), "breakdown": breakdown,
           "notes": list(model_notes)}
    if fmt in ("json", "yaml"):
        emit(doc, fmt)
        return
    if fmt == "csv":
        groups = [{"tensor_group": k, "parameters": v} for k, v in breakdown.items()]
        echo(csv_text(["tensor_group", "parameters"], groups), nl=False)
        return
    from rich.table import Table

    tbl = Table("tensor group", "parameters", "share", title=f"{spec.display_name or spec.name}: "
                f"{total:,} parameters", title_justify="left", show_edge=False)
    for name, n in breakdown.items():
        tbl.add_row(name, f"{n:,}", f"{100 * n / total:.1f} %")
    if fmt == "markdown":
        lines = [f"### {spec.name}: {total:,} parameters", "", "| tensor group | parameters |", "| --- | ---: |"]
        lines += [f"| {k} | {v:,} |" for k, v in breakdown.items()]
        echo("\n".join(lines))
        return
    rich_console().print(tbl)
    if doc["active_parameters"] != doc["parameters"]:
        echo(f"active parameters per token: {doc['active_parameters']:,} (mixture of experts: "
                   f"{spec.experts_per_token} of {spec.num_experts} routed experts)")
    for note in model_notes:
        echo(f"note: {note}")
    arch = {k: v for k, v in asdict(spec).items() if v not in (None, (), False, 0, "") and k != "aliases"}
    rich_console().print(", ".join(f"{k}={v}" for k, v in arch.items()), highlight=False, soft_wrap=True)


