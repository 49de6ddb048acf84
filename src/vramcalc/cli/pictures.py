"""The pictures of the run commands (estimate/fit/compare --plot, timeline): charts built from the core's
numbers and printed in the chosen format. Light: imported only when a picture is asked for; drawing is
cli/plot.py's.
"""

from __future__ import annotations

from typing import Any

from vramcalc.cli.output import console, echo, uses_colour
from vramcalc.core.errors import BadInput

PICTURE_FORMATS = ("table", "markdown")


class BadPlot(BadInput):
    """A picture that cannot be drawn with these options (one line, exit 2)."""


def check_format(fmt: str, asked: object, other: str = "vramcalc timeline --format json") -> None:
    """--plot draws in table and markdown output only; elsewhere it is bad input (exit 2)."""
    if asked and fmt not in PICTURE_FORMATS:
        raise BadPlot(f"--plot draws in --format table or markdown, not {fmt}; for the data use: {other}")


def _title(spec: Any, training: Any, unit: str, what: str) -> str:
    from vramcalc.core.vocab import METHOD_LABELS

    name = spec.display_name or spec.name
    how = "inference" if training.mode == "inference" else METHOD_LABELS[training.method]
    return f"{name} · {how} · batch {training.batch_size} × seq {training.seq_len}: {what} ({unit})"


def step_chart_of(spec: Any, training: Any, gpu: Any, unit: str) -> Any:
    from vramcalc.cli import plot
    from vramcalc.core.memory.timeline import timeline

    what = "memory over one step" if training.mode != "inference" else "memory of prefill and decode"
    cap = (gpu.display_name, gpu.memory_bytes) if gpu is not None else None
    return plot.step_chart(timeline(spec, training), _title(spec, training, unit, what), unit, cap)


def print_chart(chart: Any, fmt: str, no_color: bool = False) -> None:
    """The chart on stdout: Mermaid for markdown, SVG/HTML documents, else the terminal chart."""
    from vramcalc.cli import plot

    if fmt == "markdown":
        echo("\n" + plot.mermaid(chart), nl=False)
    elif fmt == "svg":
        echo(plot.svg(chart), nl=False)
    elif fmt == "html":
        echo(plot.html(chart), nl=False)
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
    from vramcalc.cli import plot
    from vramcalc.core.sweep import AXES, sweep

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
    from vramcalc.cli import plot
    from vramcalc.core.sweep import AXES

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
