"""`vramcalc timeline` and the `--plot` of estimate, fit and compare: pictures of memory (plot.py).

Everything is imported when a picture is asked for, so the plain `estimate` path pays nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from vramcalc.options import OptionValues, with_estimate_options
from vramcalc.output import console, emit, fail, uses_colour

PictureFormat = Literal["table", "markdown", "svg", "html", "json"]
Axis = Literal["batch-size", "seq-len", "lora-rank"]
PlotAxisOpt = Annotated[Axis | None, typer.Option(
    "--plot", help="Draw the peak against this option, with the GPU line and the largest value that fits.")]
# compare draws the option it varies; the name says which one
CompareAxisOpt = Annotated[Axis | None, typer.Option(
    "--plot", help="Draw the peak against this varied option (the only one varied), with a line per GPU.")]
PICTURE_FORMATS = ("table", "markdown")


class BadPlot(ValueError):
    """A picture that cannot be drawn with these options (one line, exit 2)."""


def check_format(fmt: str, asked: object, other: str = "vramcalc timeline --format json") -> None:
    """--plot draws in table and markdown output only; elsewhere it is bad input (exit 2)."""
    if asked and fmt not in PICTURE_FORMATS:
        raise fail(BadPlot(f"--plot draws in --format table or markdown, not {fmt}; for the data use: {other}"))


def _title(spec: Any, training: Any, unit: str, what: str) -> str:
    from vramcalc.render import METHOD_LABELS

    name = spec.display_name or spec.name
    how = "inference" if training.mode == "inference" else METHOD_LABELS[training.method]
    return f"{name} · {how} · batch {training.batch_size} × seq {training.seq_len}: {what} ({unit})"


def step_chart_of(spec: Any, training: Any, gpu: Any, unit: str) -> Any:
    from vramcalc import plot
    from vramcalc.memory.timeline import timeline

    what = "memory over one step" if training.mode != "inference" else "memory of prefill and decode"
    cap = (gpu.display_name, gpu.memory_bytes) if gpu is not None else None
    return plot.step_chart(timeline(spec, training), _title(spec, training, unit, what), unit, cap)


def print_chart(chart: Any, fmt: str, no_color: bool = False) -> None:
    """The chart on stdout: Mermaid for markdown, SVG/HTML documents, else the terminal chart."""
    from vramcalc import plot

    if fmt == "markdown":
        typer.echo("\n" + plot.mermaid(chart), nl=False)
    elif fmt == "svg":
        typer.echo(plot.svg(chart), nl=False)
    elif fmt == "html":
        typer.echo(plot.html(chart), nl=False)
    else:
        con = console(no_color)
        for line in plot.rich_lines(chart, con.width, uses_colour(con)):
            con.print(line, soft_wrap=True)


def print_step_plots(rows: list[Any], fmt: str, units: str, no_color: bool) -> None:
    """`estimate --plot`: each run's timeline under its report."""
    for r in rows:
        gpu = r.verdict.gpu if r.verdict is not None else None
        print_chart(step_chart_of(r.spec, r.training, gpu, units), fmt, no_color)


def sweep_chart_of(spec: Any, training: Any, gpu: Any, axis: str, unit: str) -> Any:
    """`fit --plot AXIS`: the peak over AXIS's values on `gpu` (sweep.py, exact at the boundary)."""
    from vramcalc import plot
    from vramcalc.sweep import AXES, sweep

    field = AXES[axis]
    if field == "lora_rank" and training.method not in ("lora", "qlora"):
        raise BadPlot(f"a LoRA-rank plot needs --method lora or qlora (the run is {training.method})")
    sw = sweep(spec, training, field, gpu.memory_bytes)
    label = axis.replace("-", " ")
    largest = (f"largest that fits: {label} {sw.largest:,}" if sw.largest is not None
               else f"no {label} fits")
    return plot.sweep_chart(_title(spec, training, unit, f"peak memory against {label}"), label, sw.values,
                            sw.peaks, unit, [(gpu.display_name, gpu.memory_bytes)], sw.largest, largest)


def compare_chart_of(rows: list[dict[str, Any]], gpus: list[Any], varied: list[str], axis: str,
                     unit: str) -> Any:
    """`compare --plot AXIS`: the rows' peaks over the one varied option, a line per GPU."""
    from vramcalc import plot
    from vramcalc.sweep import AXES

    field = AXES[axis]
    if varied != [field]:
        raise BadPlot(f"--plot {axis} needs --{axis} as the only varied option (varied: "
                      f"{', '.join(varied) or 'none'}); pass a comma-separated list to --{axis}")
    pairs = sorted((r["values"][field], r["breakdown"].peak_bytes) for r in rows)
    values = [v for v, _ in pairs]
    peaks = [p for _, p in pairs]
    label = axis.replace("-", " ")
    marks = []
    largest = None
    for i, g in enumerate(gpus):
        fitting = [v for v, p in pairs if p <= g.memory_bytes]
        best = max(fitting) if fitting else None
        if i == 0:
            largest = best
        marks.append(f"{g.name}: {best:,}" if best is not None else f"{g.name}: none")
    mark_label = f"largest {label} that fits: " + ", ".join(marks) if gpus else ""
    spec, t = rows[0]["spec"], rows[0]["training"]
    return plot.sweep_chart(_title(spec, t, unit, f"peak memory against {label}"), label, values, peaks, unit,
                            [(g.display_name, g.memory_bytes) for g in gpus], largest, mark_label)


@with_estimate_options()
def timeline_command(
    model: Annotated[str | None, typer.Argument(help="Model preset name, alias, Hugging Face id or "
                                                "config.json path (or `model:` in --config).")] = None,
    *,
    opts: OptionValues,
    gpu: Annotated[str | None, typer.Option(help="GPU preset: its capacity is drawn as a line.")] = None,
    sweep: Annotated[Axis | None, typer.Option(
        help="Instead of the step, draw the peak against this option with the largest value that fits "
             "(needs --gpu).")] = None,
    fmt: Annotated[PictureFormat, typer.Option(
        "--format", help="table (terminal chart), markdown (Mermaid), svg or html (a standalone picture), "
                         "json (the points).")] = "table",
    units: Annotated[Literal["GB", "GiB"], typer.Option(help="GB (10^9) or GiB (2^30).")] = "GB",
    config: Annotated[str | None, typer.Option(help="Run file or another tool's config (one run).")] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain output without colour (also NO_COLOR).")]
    = False,
) -> None:
    """Draw the predicted memory over one training step: forward layer by layer, the loss, backward layer
    by layer, the optimizer step; each component its colour (a letter without colour), the GPU's capacity
    as a line, the peak marked and named.

    Example: vramcalc timeline mistral-7b --method qlora --gpu rtx4090
    """
    from vramcalc import whatif

    try:
        rows = whatif.estimate_rows(model, gpu, None, config, opts, whatif.margin_of(None))
        if len(rows) != 1:
            raise BadPlot(f"--config {config}: timeline draws one run; this file holds {len(rows)}")
        r = rows[0]
        target = r.verdict.gpu if r.verdict is not None else None
        if sweep is not None:
            if target is None:
                raise BadPlot("--sweep needs a GPU: pass --gpu NAME (see: vramcalc gpus)")
            if fmt == "json":
                raise BadPlot("--sweep draws a picture; for the numbers use: vramcalc fit --format json")
            chart = sweep_chart_of(r.spec, r.training, target, sweep, units)
        else:
            chart = step_chart_of(r.spec, r.training, target, units)
    except whatif._errors() as e:  # BadPlot is a ValueError
        raise fail(e) from None
    if fmt == "json":
        from vramcalc.memory.timeline import timeline

        tl = timeline(r.spec, r.training)
        b = tl.breakdown
        emit({"model": b.model, "points": [{"label": p.label, "phase": p.phase, "exact": p.exact,
                                            "components": p.components, "total_bytes": p.total_bytes}
                                           for p in tl.points],
              "peak_index": tl.peak_index, "phases": b.phases, "tensor_peak_bytes": b.tensor_peak_bytes,
              "overhead_bytes": b.overhead, "peak_bytes": b.peak_bytes,
              "gpu": None if target is None else {"name": target.name, "memory_bytes": target.memory_bytes},
              "notes": list(tl.notes)}, "json")
        return
    print_chart(chart, fmt, no_color)
