"""`vramcalc gpus`: the GPU presets, or (with --fits) those that fit a run."""

from __future__ import annotations

from typing import Annotated

import typer

from vramcalc.cli.common import (
    ConfigOpt,
    FormatOpt,
    MarginOpt,
    UnitsOpt,
    complete_model,
    rich_console,
)
from vramcalc.cli.options import with_estimate_options
from vramcalc.cli.output import csv_text, echo, emit, fail
from vramcalc.core.options import OptionValues


@with_estimate_options()
def gpus(
    *,
    opts: OptionValues,
    fmt: FormatOpt = "table",
    fits: Annotated[str | None, typer.Option(help="List only the GPUs that fit this model's run (the "
                                             "estimate options describe it), smallest first, with headroom.",
                                             autocompletion=complete_model)] = None,
    margin: MarginOpt = None,
    config: ConfigOpt = None,
    units: UnitsOpt = "GB",
    check: Annotated[bool, typer.Option(help="With --fits: exit 1 when no GPU fits.")] = False,
) -> None:
    """List the GPU presets with their memory, or those that fit a run.

    Example: vramcalc gpus --fits mistral-7b --method qlora --seq-len 2048
    """
    if fits is not None:
        from vramcalc.cli.commands.gpus_fit import gpus_fit

        gpus_fit(fits, opts, margin, config, fmt, units, check)
        return
    from vramcalc.cli import render
    from vramcalc.core.errors import VramcalcError
    from vramcalc.core.specs import GpuSpec
    from vramcalc.io import presets

    try:
        specs = [s for s in presets.gpus().specs if isinstance(s, GpuSpec)]
    except VramcalcError as e:
        raise fail(e) from None
    specs.sort(key=lambda g: (g.vendor, g.memory_bytes, g.name))
    rows = [{"name": g.name, "display_name": g.display_name, "memory_bytes": g.memory_bytes, "bf16": g.bf16,
             "fp8": g.fp8, "vendor": g.vendor, "source": g.source} for g in specs]
    if fmt in ("json", "yaml"):
        emit({"gpus": rows}, fmt)
        return
    if fmt == "csv":
        echo(csv_text(list(rows[0]) if rows else ["name"], rows), nl=False)
        return
    if fmt == "markdown":
        lines = ["| name | GPU | memory | bf16 |", "| --- | --- | ---: | --- |"]
        lines += [f"| {g.name} | {g.display_name} | {render.gpu_capacity(g)} | {'yes' if g.bf16 else 'no'} |"
                  for g in specs]
        echo("\n".join(lines))
        return
    from rich.table import Table

    tbl = Table("name", "GPU", "memory", "bf16", show_edge=False)
    for g in specs:
        tbl.add_row(g.name, g.display_name, render.gpu_capacity(g), "yes" if g.bf16 else "no")
    rich_console().print(tbl)


