"""`vramcalc compare`: the cross product of option lists, peak per configuration, fit per GPU."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vramcalc.cli.common import (
    BadInput,
    CheckOpt,
    CompareAxisOpt,
    ConfigOpt,
    FormatOpt,
    MarginOpt,
    MaxMemoryOpt,
    NoColorOpt,
    UnitsOpt,
    training_spec,
)
from vramcalc.cli.options import with_estimate_options
from vramcalc.cli.output import console, csv_text, emit, uses_colour
from vramcalc.cli.runs import CSV_COLUMNS, STATUS_STYLE, flat_row, margin_of, split, targets
from vramcalc.core.options import OptionValues, varied_label
from vramcalc.io.resolve import resolve_model


@with_estimate_options(multi=True)
def compare(
    model: Annotated[
        str | None, typer.Argument(help="Model preset(s), comma-separated; or from --config.")
    ] = None,
    *,
    opts: OptionValues,
    gpu: Annotated[str | None, typer.Option(help="GPU preset(s), comma-separated: one column each.")] = None,
    max_memory: MaxMemoryOpt = None,
    margin: MarginOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
    units: UnitsOpt = "GB",
    no_color: NoColorOpt = False,
    check: CheckOpt = False,
    plot: CompareAxisOpt = None,
) -> None:
    """Compare the cross product of option lists: peak per configuration, fit per GPU.

    Any estimate option takes a comma-separated list (--lora-targets takes ;-separated sets).
    Example: vramcalc compare mistral-7b --method full,lora,qlora --gpu rtx4090,a100-80gb --batch-size 1,4
    """
    from vramcalc.core.checks import check_run
    from vramcalc.core.fit import precision_note
    from vramcalc.core.margin import classify
    from vramcalc.core.memory import estimate as run_estimate
    from vramcalc.io import runfiles

    m = margin_of(margin)
    base: dict[str, Any] = {}
    file_model = file_gpu = None
    if config:
        runs = runfiles.load(config)
        if len(runs) != 1:
            raise BadInput(
                f"--config {config}: compare takes one base run; this file holds {len(runs)} "
                "(use vramcalc estimate --config for a list of runs)"
            )
        base, file_model, file_gpu = runs[0].options, runs[0].model, runs[0].gpu
    models = split(model) or ([file_model] if file_model else [])
    if not models:
        raise BadInput("no model: pass MODEL (or several, comma-separated)")
    varied, runs_opts = opts.sweep(base, times=len(models))  # refuses too many before building them
    specs = [resolve_model(x)[0] for x in models]
    gpus = targets(split(gpu) or ([file_gpu] if file_gpu else []), max_memory)
    if len(specs) > 1:
        varied = ["model", *varied]
    rows = []
    notes: list[str] = []
    for spec in specs:
        for values in runs_opts:
            t = training_spec(values)
            b = run_estimate(spec, t)
            cells = [
                {
                    "gpu": g.name,
                    "status": _status(classify(b.peak_bytes, g.memory_bytes, m), b),
                    "headroom_bytes": g.memory_bytes - b.peak_bytes,
                }
                for g in gpus
            ]
            notes += [n for n in check_run(spec, t) if n not in notes]
            if not b.activations_modeled and COUNT_ONLY not in notes:
                notes.append(COUNT_ONLY)
            for g in gpus:
                warning = precision_note(g, t.precision) if t.mode == "train" or t.precision != "auto" else None
                if warning and warning not in notes:
                    notes.append(warning)
            rows.append({"spec": spec, "training": t, "breakdown": b, "values": values, "cells": cells})
    if len(rows) > 10_000:
        raise BadInput(f"{len(rows)} configurations; narrow the lists (at most 10,000)")
    if plot:  # issue 17: the peak against the varied option
        from vramcalc.cli.pictures import check_format, compare_chart_of

        check_format(fmt, plot, "vramcalc compare --format json")
        chart = compare_chart_of(rows, gpus, varied, plot, units)
    cheapest = _cheapest(rows, gpus)
    doc = _compare_doc(rows, gpus, varied, m, units, cheapest) | {"notes": notes}
    if fmt in ("json", "yaml"):
        emit(doc, fmt)
    elif fmt == "csv":
        flat = []
        for i, r in enumerate(rows):
            for g, c in zip(gpus, r["cells"], strict=True) if gpus else [(None, None)]:
                flat.append(
                    flat_row(r["breakdown"], r["training"], g, c and c["status"], c and c["headroom_bytes"],
                             family=r["spec"].family)
                    | {"name": str(i + 1)}
                )
        typer.echo(csv_text(CSV_COLUMNS, flat), nl=False)
    elif fmt == "markdown":
        typer.echo(_compare_markdown(rows, gpus, varied, m, units, cheapest, notes), nl=False)
    else:
        _compare_table(rows, gpus, varied, m, units, cheapest, no_color, notes)
    if plot:
        from vramcalc.cli.pictures import print_chart

        print_chart(chart, fmt, no_color)
    if check and any(c["status"] == "DOES NOT FIT" for r in rows for c in r["cells"]):
        raise typer.Exit(code=1)


COUNT_ONLY = ("activations not modeled for a preset that gives only a parameter count: a fit is TIGHT at "
              "best")
# What "cheapest" means: GPU presets carry no price, so what a user pays is ranked by the number of GPUs,
# then the card's memory class (4 GiB steps: an 80 GB H100 and an 80 GB A100 are one class), then the
# previous generation (no fp8), then the order of --gpu; the lowest peak breaks a tie.
CHEAPEST = "fewest GPUs, then the smallest card by memory, then the older card; no prices are known"


def _status(status: str, b: Any) -> str:
    """A count-only preset's activations are unknown: never a plain FITS."""
    return "TIGHT" if status == "FITS" and not b.activations_modeled else status


def _cheapest(rows: list[dict[str, Any]], gpus: list[Any]) -> tuple[int, str | None] | None:
    """The fitting cell a user pays least for (CHEAPEST); without GPUs, the lowest peak."""
    if not gpus:
        if not rows:
            return None
        i = min(range(len(rows)), key=lambda k: rows[k]["breakdown"].peak_bytes)
        return (i, None)
    best: tuple[Any, ...] | None = None
    for i, r in enumerate(rows):
        t = r["training"]
        for order, (g, c) in enumerate(zip(gpus, r["cells"], strict=True)):
            if c["status"] != "DOES NOT FIT":
                memory_class = round(g.memory_bytes / (4 * 2**30))
                key = (t.gpus_per_node * t.nodes, memory_class, g.fp8, order, r["breakdown"].peak_bytes, i, g.name)
                best = key if best is None or key < best else best
    return None if best is None else (best[-2], best[-1])


def _varied_value(r: dict[str, Any], name: str) -> Any:
    if name == "model":
        return r["spec"].name
    return r["values"][name]


def _compare_doc(
    rows: list[dict[str, Any]],
    gpus: list[Any],
    varied: list[str],
    m: Any,
    units: str,
    cheapest: tuple[int, str | None] | None,
) -> dict[str, Any]:
    from vramcalc.cli import render
    from vramcalc.core.memory import COMPONENTS

    return {
        "varied": varied,
        "gpus": [
            {"name": g.name, "display_name": g.display_name, "memory_bytes": g.memory_bytes} for g in gpus
        ],
        "margin": {"fraction": m.fraction, "source": m.source},
        "units": units,
        "rows": [
            {
                "model": r["breakdown"].model,
                "settings": render.settings(r["training"], r["spec"].family),
                "components": {c: r["breakdown"].component(c) for c in COMPONENTS},
                "peak_bytes": r["breakdown"].peak_bytes,
                "peak_phase": r["breakdown"].peak_phase,
                "cells": r["cells"],
            }
            for r in rows
        ],
        "cheapest": None if cheapest is None else {"row": cheapest[0], "gpu": cheapest[1]},
    }


CELL_WORD = {"FITS": "FITS", "TIGHT": "TIGHT", "DOES NOT FIT": "NO"}


def _cell_text(c: dict[str, Any], units: str) -> str:
    from vramcalc.core.units import UNIT_BYTES

    delta = c["headroom_bytes"] / UNIT_BYTES[units]
    return f"{CELL_WORD[c['status']]} {delta:+,.1f}"


def _compare_table(
    rows: list[dict[str, Any]],
    gpus: list[Any],
    varied: list[str],
    m: Any,
    units: str,
    cheapest: tuple[int, str | None] | None,
    no_color: bool,
    notes: list[str],
) -> None:
    from rich.table import Table
    from rich.text import Text

    from vramcalc.cli import bars, render

    con = console(no_color)
    colour = uses_colour(con)
    title = ", ".join(sorted({r["spec"].display_name or r["spec"].name for r in rows}))
    tbl = Table(
        title=f"{title}: peak per configuration; per GPU the status and headroom ({units})",
        title_justify="left",
        show_edge=False,
    )
    tbl.add_column("#", justify="right")
    for name in varied_label(varied) or ["method"]:
        tbl.add_column(name)
    tbl.add_column(f"peak ({units})", justify="right")
    for g in gpus:
        tbl.add_column(g.name, justify="right")
    # The bar needs room: drawn when the terminal (or COLUMNS) is wide enough for it and the cells.
    show_bar = con.width >= 60 + 14 * len(gpus) + 8 * len(varied)
    if show_bar:
        tbl.add_column("memory", no_wrap=True)
    scale = max([r["breakdown"].peak_bytes for r in rows] + [g.memory_bytes for g in gpus])
    for i, r in enumerate(rows):
        star = cheapest is not None and cheapest[0] == i
        cells: list[Any] = [f"{i + 1}{' *' if star else ''}"]
        cells += [str(_varied_value(r, n)) for n in varied] or [r["training"].method]
        cells.append(render.format_bytes(r["breakdown"].peak_bytes, units).removesuffix(f" {units}"))
        for g, c in zip(gpus, r["cells"], strict=True):
            mark = " *" if star and cheapest is not None and cheapest[1] == g.name else ""
            cells.append(Text(_cell_text(c, units) + mark, style=STATUS_STYLE[c["status"]] if colour else ""))
        if show_bar:
            cells.append(bars.bar(r["breakdown"], [g.memory_bytes for g in gpus], scale, 16, colour))
        tbl.add_row(*cells)
    con.print(tbl)
    if cheapest is not None:
        where = f" on {cheapest[1]}" if cheapest[1] else ""
        why = f" ({CHEAPEST})" if gpus else ""
        kind = "cheapest fitting configuration" if gpus else "lowest peak"
        con.print(f"* {kind}: row {cheapest[0] + 1}{where}{why}")
    elif gpus:
        con.print("no configuration fits any of the GPUs", style="bold red" if colour else "")
    con.print(
        f"cells: status and headroom in {units} (NO = does not fit); TIGHT below a margin of "
        f"{m.describe()}" + ("; bar: the peak, | = GPU capacity" if show_bar else ""),
        style="dim",
    )
    for n in notes:
        con.print(f"note: {n}", style="yellow" if colour else "")


def _compare_markdown(
    rows: list[dict[str, Any]],
    gpus: list[Any],
    varied: list[str],
    m: Any,
    units: str,
    cheapest: tuple[int, str | None] | None,
    notes: list[str],
) -> str:
    from vramcalc.cli import render

    head = ["#", *(varied_label(varied) or ["method"]), f"peak ({units})", *(g.name for g in gpus)]
    align = ["---:"] + ["---"] * (len(head) - 2 - len(gpus)) + ["---:"] * (1 + len(gpus))
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |"]
    for i, r in enumerate(rows):
        star = cheapest is not None and cheapest[0] == i
        vals = [str(_varied_value(r, n)) for n in varied] or [r["training"].method]
        cells = [
            _cell_text(c, units) + (" ★" if star and cheapest and cheapest[1] == g.name else "")
            for g, c in zip(gpus, r["cells"], strict=True)
        ]
        lines.append(
            "| "
            + " | ".join([f"{i + 1}", *vals, render.format_bytes(r["breakdown"].peak_bytes, units), *cells])
            + " |"
        )
    lines += ["", f"Margin: TIGHT below {m.describe()}."]
    if cheapest is not None and gpus:
        lines.append(f"★ cheapest fitting configuration: row {cheapest[0] + 1} on {cheapest[1]} ({CHEAPEST}).")
    lines += [f"Note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


