"""The what-if commands: `compare`, `fit`, `gpus --fits`, and `estimate`'s run files and margins.

Commands here are plain functions that cli.py registers on its Typer app; they parse, delegate to the
pure core (memory, solve, margin) and print. Exit codes as everywhere: 0, 1 with --check when the
asked configuration does not fit, 2 bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from vramcalc.options import OPTIONS, OptionValues, training_spec, varied_label, with_estimate_options
from vramcalc.output import OutFormat, console, csv_text, emit, fail, uses_colour

UnitsOpt = Annotated[
    Literal["GB", "GiB"], typer.Option(help="GB (10^9, as the seed texts count) or GiB (2^30).")
]
FormatOpt = Annotated[
    OutFormat, typer.Option("--format", help="Output format (markdown for pull-request comments).")
]
MarginOpt = Annotated[
    str | None,
    typer.Option(help="Headroom below which a fit is TIGHT: 5% or 0.05 of the estimated peak "
                      "(default 7%: the measured error band)."),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(help="Gate on a memory budget instead of a GPU: 20GB (10^9), 24GiB (2^30) or bytes."),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        help="Run file (YAML/JSON of option keys, one run or a list) or an axolotl, LLaMA-Factory, HF "
        "TrainingArguments or torchtune config. Command-line options override it."
    ),
]
from vramcalc.commands_plot import CompareAxisOpt, PlotAxisOpt  # noqa: E402  (issue 17; typer only)

NoColorOpt = Annotated[bool, typer.Option("--no-color", help="Plain output without colour (also NO_COLOR).")]
CheckOpt = Annotated[bool, typer.Option(help="Exit 1 when the asked configuration does not fit.")]


class BadInput(ValueError):
    """An input problem found by these commands (reported as one line, exit 2)."""


def _errors() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from vramcalc.errors import VramcalcError
    from vramcalc.options import OptionError

    return (VramcalcError, ValidationError, OptionError, BadInput, ValueError)


def margin_of(text: str | None) -> Any:
    from vramcalc.margin import Margin, parse_margin

    return Margin() if text is None else parse_margin(text)


def targets(gpu_names: list[str], max_memory: str | None) -> list[Any]:
    """GpuSpecs to check against: presets by name, or one `budget` standing for --max-memory."""
    from vramcalc import presets
    from vramcalc.margin import parse_size
    from vramcalc.specs import GpuSpec

    out = [presets.find_gpu(g) for g in gpu_names]
    if max_memory is not None:
        out.append(
            GpuSpec(
                name="budget",
                display_name=f"budget {max_memory.strip()}",
                source="--max-memory",
                memory_bytes=parse_size(max_memory),
            )
        )
    return out


def split(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


# ---- estimate: run files, status and margin ----------------------------------------------------------


@dataclass
class EstimateRow:
    """One estimated run, ready to print."""

    name: str | None
    spec: Any
    training: Any
    breakdown: Any
    verdict: Any
    status: str | None
    source: Any  # runfiles.Run or None


def estimate_rows(
    model: str | None,
    gpu: str | None,
    max_memory: str | None,
    config: str | None,
    opts: OptionValues,
    margin: Any,
) -> list[EstimateRow]:
    """Every run asked for: one from the command line, or each run of --config (flags override)."""
    from vramcalc import runfiles
    from vramcalc.fit import fit, precision_note
    from vramcalc.margin import classify
    from vramcalc.memory import estimate as run_estimate

    runs = runfiles.load(config) if config else [runfiles.Run()]
    rows = []
    for run in runs:
        ref = model or run.model
        if ref is None:
            hint = f" ({run.notes[-1].rstrip('.')})" if run.notes else ""
            raise BadInput(
                f"no model{hint}; pass MODEL (a preset or a config.json path) or put `model:` in the run file"
            )
        base = Path(run.path).parent if run.path and model is None else None
        spec, model_notes = runfiles.resolve_model_with_notes(ref, base)
        gpu_name = gpu or run.gpu
        gpus = targets([gpu_name] if gpu_name else [], max_memory)
        if len(gpus) > 1:
            gpus = gpus[-1:]  # --max-memory wins over a GPU named in the run file
        training = training_spec(opts.run(run.options))
        b = run_estimate(spec, training)
        notes = [n for n in [*model_notes, run.note(), *run.notes] if n]
        gpu_spec = gpus[0] if gpus else None
        warning = precision_note(gpu_spec, training.precision) if gpu_spec is not None else None
        if warning:
            notes.insert(0, warning)
        if notes:
            b = replace(b, notes=(*notes, *b.notes))
        v = fit(b, gpu_spec) if gpu_spec is not None else None
        status = classify(b.peak_bytes, gpu_spec.memory_bytes, margin) if gpu_spec is not None else None
        rows.append(EstimateRow(run.name, spec, training, b, v, status, run if config else None))
    return rows


def estimate_doc(row: EstimateRow, margin: Any, units: str) -> dict[str, Any]:
    """render.to_json plus `status`, `margin` and, for a file, `config_source`."""
    from vramcalc import render

    doc = render.to_json(row.breakdown, row.training, row.verdict, units, row.status, margin)
    if row.source is not None:
        doc["name"] = row.name
        doc["config_source"] = row.source.source_doc()
    return doc


# memory.COMPONENTS, spelled out so importing the CLI does not import the core (stable CSV columns).
CSV_COMPONENTS = ("weights", "gradients", "optimizer_state", "activations", "kv_cache", "communication",
                  "temporaries", "overhead")


def flat_row(
    b: Any, training: Any, gpu: Any, status: str | None, headroom: int | None, name: str | None = None
) -> dict[str, Any]:
    from vramcalc import render

    row: dict[str, Any] = {"name": name, "model": b.model}
    settings = render.settings(training)
    row.update({o.name: settings.get(o.name) for o in OPTIONS})
    row.update({c: b.component(c) for c in CSV_COMPONENTS})
    row.update(
        peak_bytes=b.peak_bytes,
        tensor_peak_bytes=b.tensor_peak_bytes,
        peak_phase=b.peak_phase,
        gpu=None if gpu is None else gpu.name,
        gpu_memory_bytes=None if gpu is None else gpu.memory_bytes,
        status=status,
        headroom_bytes=headroom,
    )
    return row


CSV_COLUMNS = (
    "name",
    "model",
    *(o.name for o in OPTIONS),
    *CSV_COMPONENTS,
    "peak_bytes",
    "tensor_peak_bytes",
    "peak_phase",
    "gpu",
    "gpu_memory_bytes",
    "status",
    "headroom_bytes",
)

STATUS_STYLE = {"FITS": "bold green", "TIGHT": "bold yellow", "DOES NOT FIT": "bold red", None: ""}


def print_estimate(rows: list[EstimateRow], margin: Any, fmt: str, units: str, no_color: bool) -> None:
    """Print one run as the full report, several as one table of rows."""
    from vramcalc import bars, render

    if fmt in ("json", "yaml"):
        docs = [estimate_doc(r, margin, units) for r in rows]
        emit(docs[0] if len(docs) == 1 and rows[0].source is None else {"runs": docs}, fmt)
        return
    if fmt == "csv":
        typer.echo(
            csv_text(
                CSV_COLUMNS,
                [
                    flat_row(
                        r.breakdown,
                        r.training,
                        r.verdict and r.verdict.gpu,
                        r.status,
                        r.verdict and r.verdict.headroom_bytes,
                        r.name,
                    )
                    for r in rows
                ],
            ),
            nl=False,
        )
        return
    if fmt == "markdown" and len(rows) == 1:
        r = rows[0]
        text = render.markdown(r.spec, r.breakdown, r.training, r.verdict, units)
        if r.status is not None:
            text += f"\nStatus: **{r.status}** (margin {margin.describe()})\n"
        typer.echo(text, nl=False)
        return
    if fmt == "markdown":
        lines = [
            "| run | model | method | batch × seq | peak | GPU | status | headroom |",
            "| --- | --- | --- | --- | ---: | --- | --- | ---: |",
        ]
        for i, r in enumerate(rows, 1):
            t, v = r.training, r.verdict
            lines.append(
                f"| {r.name or i} | {r.breakdown.model} | {t.method} | {t.batch_size} × {t.seq_len} | "
                f"{render.format_bytes(r.breakdown.peak_bytes, units)} | {v.gpu.name if v else ''} | "
                f"{r.status or ''} | {render.format_bytes(v.headroom_bytes, units) if v else ''} |"
            )
        lines += ["", f"Margin: TIGHT below {margin.describe()}."]
        typer.echo("\n".join(lines) + "\n", nl=False)
        return
    con = console(no_color)
    colour = uses_colour(con)
    if len(rows) == 1:
        r = rows[0]
        report = render.report_lines(r.spec, r.breakdown, r.training, r.verdict, units, con.width, r.status,
                                     margin if r.verdict is not None else None, colour)
        from rich.text import Text

        for line in report:
            con.print(Text.assemble(*line), soft_wrap=True)
        return
    from rich.table import Table

    tbl = Table("run", "model", "method", "batch × seq", "peak", "GPU", "status", show_edge=False)
    show_bar = con.width >= 120  # the bar needs room beside seven columns
    if show_bar:
        tbl.add_column("memory", no_wrap=True)
    scale = max(
        max(r.breakdown.sum_bytes for r in rows),
        max((r.verdict.gpu.memory_bytes for r in rows if r.verdict), default=0),
    )
    for i, r in enumerate(rows, 1):
        t = r.training
        cells: list[Any] = [
            r.name or str(i),
            r.breakdown.model,
            t.method,
            f"{t.batch_size} × {t.seq_len}",
            render.format_bytes(r.breakdown.peak_bytes, units),
            r.verdict.gpu.name if r.verdict else "",
            r.status or "",
        ]
        if show_bar:
            cells.append(
                bars.bar(r.breakdown, [r.verdict.gpu.memory_bytes] if r.verdict else [], scale, 24, colour)
            )
        tbl.add_row(
            *cells,
            style=STATUS_STYLE[r.status] if colour else "",
        )
    con.print(tbl)
    con.print(f"margin: {margin.describe()}", style="dim")


def estimate_exit(rows: list[EstimateRow], check: bool) -> None:
    if check and any(r.status == "DOES NOT FIT" for r in rows):
        raise typer.Exit(code=1)


# ---- compare -------------------------------------------------------------------------------------------


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
    from vramcalc import runfiles
    from vramcalc.margin import classify
    from vramcalc.memory import estimate as run_estimate

    try:
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
        specs = [runfiles.resolve_model(x) for x in models]
        gpus = targets(split(gpu) or ([file_gpu] if file_gpu else []), max_memory)
        varied, runs_opts = opts.sweep(base)
        if len(specs) > 1:
            varied = ["model", *varied]
        rows = []
        for spec in specs:
            for values in runs_opts:
                t = training_spec(values)
                b = run_estimate(spec, t)
                cells = [
                    {
                        "gpu": g.name,
                        "status": classify(b.peak_bytes, g.memory_bytes, m),
                        "headroom_bytes": g.memory_bytes - b.peak_bytes,
                    }
                    for g in gpus
                ]
                rows.append({"spec": spec, "training": t, "breakdown": b, "values": values, "cells": cells})
        if len(rows) > 10_000:
            raise BadInput(f"{len(rows)} configurations; narrow the lists (at most 10,000)")
        if plot:  # issue 17: the peak against the varied option
            from vramcalc.commands_plot import check_format, compare_chart_of
            check_format(fmt, plot, "vramcalc compare --format json")
            chart = compare_chart_of(rows, gpus, varied, plot, units)
    except _errors() as e:  # commands_plot.BadPlot is a ValueError
        raise fail(e) from None
    cheapest = _cheapest(rows, gpus)
    doc = _compare_doc(rows, gpus, varied, m, units, cheapest)
    if fmt in ("json", "yaml"):
        emit(doc, fmt)
    elif fmt == "csv":
        flat = []
        for i, r in enumerate(rows):
            for g, c in zip(gpus, r["cells"], strict=True) if gpus else [(None, None)]:
                flat.append(
                    flat_row(r["breakdown"], r["training"], g, c and c["status"], c and c["headroom_bytes"])
                    | {"name": str(i + 1)}
                )
        typer.echo(csv_text(CSV_COLUMNS, flat), nl=False)
    elif fmt == "markdown":
        typer.echo(_compare_markdown(rows, gpus, varied, m, units, cheapest), nl=False)
    else:
        _compare_table(rows, gpus, varied, m, units, cheapest, no_color)
    if plot:
        from vramcalc.commands_plot import print_chart
        print_chart(chart, fmt, no_color)
    if check and any(c["status"] == "DOES NOT FIT" for r in rows for c in r["cells"]):
        raise typer.Exit(code=1)


def _cheapest(rows: list[dict[str, Any]], gpus: list[Any]) -> tuple[int, str | None] | None:
    """The fitting cell on the smallest GPU, then with the lowest peak; without GPUs, the lowest peak."""
    if not gpus:
        if not rows:
            return None
        i = min(range(len(rows)), key=lambda k: rows[k]["breakdown"].peak_bytes)
        return (i, None)
    best: tuple[int, int, int, str] | None = None
    for i, r in enumerate(rows):
        for g, c in zip(gpus, r["cells"], strict=True):
            if c["status"] != "DOES NOT FIT":
                key = (g.memory_bytes, r["breakdown"].peak_bytes, i, g.name)
                best = key if best is None or key < best else best
    return None if best is None else (best[2], best[3])


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
    from vramcalc import render
    from vramcalc.memory import COMPONENTS

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
                "settings": render.settings(r["training"]),
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
    from vramcalc.units import UNIT_BYTES

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
) -> None:
    from rich.table import Table
    from rich.text import Text

    from vramcalc import bars, render

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
    scale = max([r["breakdown"].sum_bytes for r in rows] + [g.memory_bytes for g in gpus])
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
        kind = "cheapest fitting configuration (smallest GPU, then lowest peak)" if gpus else "lowest peak"
        con.print(f"* {kind}: row {cheapest[0] + 1}{where}")
    elif gpus:
        con.print("no configuration fits any of the GPUs", style="bold red" if colour else "")
    con.print(
        f"cells: status and headroom in {units} (NO = does not fit); TIGHT below a margin of "
        f"{m.describe()}" + ("; bar: components added up, | = GPU capacity" if show_bar else ""),
        style="dim",
    )


def _compare_markdown(
    rows: list[dict[str, Any]],
    gpus: list[Any],
    varied: list[str],
    m: Any,
    units: str,
    cheapest: tuple[int, str | None] | None,
) -> str:
    from vramcalc import render

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
        lines.append(f"★ cheapest fitting configuration: row {cheapest[0] + 1} on {cheapest[1]}.")
    return "\n".join(lines) + "\n"


# ---- fit -----------------------------------------------------------------------------------------------


@with_estimate_options()
def fit_command(
    model: Annotated[
        str | None, typer.Argument(help="Model preset, or a config.json path; or from --config.")
    ] = None,
    *,
    opts: OptionValues,
    gpu: Annotated[str | None, typer.Option(help="GPU preset to fit on.")] = None,
    max_memory: MaxMemoryOpt = None,
    margin: MarginOpt = None,
    config: ConfigOpt = None,
    fmt: FormatOpt = "table",
    units: UnitsOpt = "GB",
    check: CheckOpt = False,
    plot: PlotAxisOpt = None,
) -> None:
    """The largest batch size, sequence length and LoRA rank that fit, and what makes a run fit.

    Each limit varies one option with the others as given. Exact at the boundary: the answer fits, one
    more does not. Example: vramcalc fit mistral-7b --gpu rtx4090 --method qlora --seq-len 2048
    """
    from vramcalc import render, runfiles
    from vramcalc.solve import fit_report

    try:
        m = margin_of(margin)
        run = runfiles.load(config)[0] if config else runfiles.Run()
        if config and len(runfiles.load(config)) != 1:
            raise BadInput(f"--config {config}: fit takes one run; this file holds several")
        ref = model or run.model
        if ref is None:
            raise BadInput("no model: pass MODEL or put `model:` in the run file")
        spec = runfiles.resolve_model(ref, Path(run.path).parent if run.path and model is None else None)
        gpu_name = gpu or run.gpu
        found = targets([gpu_name] if gpu_name and not max_memory else [], max_memory)
        if not found:
            raise BadInput("fit needs a GPU: pass --gpu NAME (see: vramcalc gpus) or --max-memory 20GB")
        target = found[0]
        training = training_spec(opts.run(run.options))
        rep = fit_report(spec, training, target.memory_bytes, m)
        if plot:  # issue 17: the peak against one option
            from vramcalc.commands_plot import check_format, sweep_chart_of
            check_format(fmt, plot, "vramcalc fit --format json (max_batch_size, max_seq_len, max_lora_rank)")
            chart = sweep_chart_of(spec, training, target, plot, units)
    except _errors() as e:  # commands_plot.BadPlot is a ValueError
        raise fail(e) from None
    doc = {
        "model": spec.name,
        "gpu": {
            "name": target.name,
            "display_name": target.display_name,
            "memory_bytes": target.memory_bytes,
        },
        "settings": render.settings(training),
        "peak_bytes": rep.peak_bytes,
        "fits": rep.status != "DOES NOT FIT",
        "status": rep.status,
        "headroom_bytes": target.memory_bytes - rep.peak_bytes,
        "margin": m.doc(rep.peak_bytes),
        "max_batch_size": rep.max_batch_size,
        "max_seq_len": rep.max_seq_len,
        "max_lora_rank": rep.max_lora_rank,
        "caps": rep.caps,
        "suggestions": [s.as_dict() for s in rep.suggestions],
        "min_gpus": rep.min_gpus,
        "units": units,
        "notes": list(rep.notes),
    }
    _print_fit(doc, fmt, units)
    if plot:
        from vramcalc.commands_plot import print_chart
        print_chart(chart, fmt)
    if check and rep.status == "DOES NOT FIT":
        raise typer.Exit(code=1)


def _changes_text(changes: dict[str, Any]) -> str:
    from vramcalc.options import BY_NAME

    parts = []
    for k, v in changes.items():
        flag = BY_NAME[k].flag if k in BY_NAME else "--" + k.replace("_", "-")
        parts.append(flag if v is True else f"{flag} {v}")
    return " ".join(parts)


def _limit_text(doc: dict[str, Any], key: str) -> str:
    value = doc[key]
    if value is None:
        return (
            "n/a (not LoRA)"
            if key == "max_lora_rank" and doc["settings"]["method"] not in ("lora", "qlora")
            else "nothing fits"
        )
    capped = " (search cap)" if value == doc["caps"].get(key) else ""
    return f"{value:,}{capped}"


def _print_fit(doc: dict[str, Any], fmt: str, units: str) -> None:
    from vramcalc.render import format_bytes

    if fmt in ("json", "yaml"):
        emit(doc, fmt)
        return
    if fmt == "csv":
        cols = ["model", "gpu", "peak_bytes", "status", "max_batch_size", "max_seq_len", "max_lora_rank"]
        row = {**doc, "gpu": doc["gpu"]["name"]}
        rows = [row] + [
            {
                "model": doc["model"],
                "gpu": doc["gpu"]["name"],
                "peak_bytes": s["peak_bytes"],
                "status": s["status"],
                "suggestion": _changes_text(s["changes"]),
            }
            for s in doc["suggestions"]
        ]
        typer.echo(csv_text([*cols, "suggestion"], rows), nl=False)
        return
    head = (
        f"{doc['model']} on {doc['gpu']['display_name']} "
        f"({format_bytes(doc['gpu']['memory_bytes'], units)}): "
        f"needs {format_bytes(doc['peak_bytes'], units)}, {doc['status']}"
    )
    inference = doc["settings"].get("mode") == "inference"
    limits = [
        ("largest batch size", "max_batch_size"),
        ("longest context" if inference else "longest sequence", "max_seq_len"),
        ("largest LoRA rank", "max_lora_rank"),
    ]
    if fmt == "markdown":
        lines = [f"### {head}", "", "| limit | value |", "| --- | ---: |"]
        lines += [f"| {label} | {_limit_text(doc, key)} |" for label, key in limits]
        if doc["suggestions"]:
            lines += ["", "| change | peak | status |", "| --- | ---: | --- |"]
            lines += [
                f"| `{_changes_text(s['changes'])}` | {format_bytes(s['peak_bytes'], units)} "
                f"| {s['status']} |"
                for s in doc["suggestions"]
            ]
        lines += [""] + [f"- {n}" for n in doc["notes"]]
        typer.echo("\n".join(lines) + "\n", nl=False)
        return
    con = console()
    con.print(head, style=STATUS_STYLE[doc["status"]], soft_wrap=True)
    for label, key in limits:
        con.print(f"  {label}: {_limit_text(doc, key)}", soft_wrap=True)
    if doc["suggestions"]:
        con.print("changes that make it fit (fewest and least invasive first):")
        for i, s in enumerate(doc["suggestions"], 1):
            con.print(
                f"  {i}. {_changes_text(s['changes'])}: {format_bytes(s['peak_bytes'], units)} "
                f"({s['status']}, {format_bytes(s['headroom_bytes'], units)} headroom)",
                soft_wrap=True,
            )
    if doc["min_gpus"] is not None:
        con.print(f"  GPUs of this kind needed with ZeRO-3: {doc['min_gpus']}", soft_wrap=True)
    con.print(f"margin: {margin_text_from_doc(doc)}", style="dim", soft_wrap=True)
    for n in doc["notes"]:
        con.print(f"note: {n}", style="dim", soft_wrap=True)


def margin_text_from_doc(doc: dict[str, Any]) -> str:
    from vramcalc.margin import Margin

    return Margin(doc["margin"]["fraction"], doc["margin"]["source"]).describe()


# ---- gpus --fits ---------------------------------------------------------------------------------------


def gpus_fit(
    model: str, opts: OptionValues, margin: str | None, config: str | None, fmt: str, units: str, check: bool
) -> None:
    """Which GPU presets fit a run, smallest first, with headroom."""
    from vramcalc import presets, render, runfiles
    from vramcalc.margin import classify
    from vramcalc.memory import estimate as run_estimate
    from vramcalc.specs import GpuSpec

    try:
        m = margin_of(margin)
        run = runfiles.load(config)[0] if config else runfiles.Run()
        spec = runfiles.resolve_model(model)
        training = training_spec(opts.run(run.options))
        b = run_estimate(spec, training)
        all_gpus = [g for g in presets.gpus().specs if isinstance(g, GpuSpec)]
    except _errors() as e:
        raise fail(e) from None
    rows: list[dict[str, Any]] = []
    for g in sorted(all_gpus, key=lambda g: (g.memory_bytes, g.name)):
        status = classify(b.peak_bytes, g.memory_bytes, m)
        if status != "DOES NOT FIT":
            rows.append(
                {
                    "name": g.name,
                    "display_name": g.display_name,
                    "memory_bytes": g.memory_bytes,
                    "status": status,
                    "headroom_bytes": g.memory_bytes - b.peak_bytes,
                    "bf16": g.bf16,
                    "vendor": g.vendor,
                }
            )
    doc = {
        "model": spec.name,
        "settings": render.settings(training),
        "peak_bytes": b.peak_bytes,
        "margin": m.doc(b.peak_bytes),
        "units": units,
        "gpus": rows,
    }
    if fmt in ("json", "yaml"):
        emit(doc, fmt)
    elif fmt == "csv":
        typer.echo(
            csv_text(["name", "display_name", "memory_bytes", "status", "headroom_bytes", "bf16"], rows),
            nl=False,
        )
    elif fmt == "markdown":
        lines = [
            f"GPUs that fit {spec.name} (needs {render.format_bytes(b.peak_bytes, units)}):",
            "",
            "| name | GPU | memory | status | headroom |",
            "| --- | --- | ---: | --- | ---: |",
        ]
        lines += [
            f"| {r['name']} | {r['display_name']} | {render.format_bytes(r['memory_bytes'], units)} | "
            f"{r['status']} | {render.format_bytes(r['headroom_bytes'], units)} |"
            for r in rows
        ]
        typer.echo("\n".join(lines) + "\n", nl=False)
    else:
        from rich.table import Table

        con = console()
        tbl = Table(
            "name",
            "GPU",
            "memory",
            "status",
            "headroom",
            show_edge=False,
            title=f"GPUs that fit {spec.name}: needs {render.format_bytes(b.peak_bytes, units)}",
            title_justify="left",
        )
        for r in rows:
            tbl.add_row(
                r["name"],
                r["display_name"],
                render.format_bytes(r["memory_bytes"], units),
                r["status"],
                render.format_bytes(r["headroom_bytes"], units),
                style=STATUS_STYLE[r["status"]],
            )
        con.print(tbl)
        if not rows:
            con.print("no GPU preset fits this run (see: vramcalc fit MODEL --gpu NAME for what would)")
        con.print(f"margin: TIGHT below {m.describe()}", style="dim")
    if check and not rows:
        raise typer.Exit(code=1)
