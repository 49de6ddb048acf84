"""`vramcalc timeline` and the `--plot` of estimate, fit and compare: pictures of memory (plot.py).

Everything is imported when a picture is asked for, so the plain `estimate` path pays nothing.
"""

from __future__ import annotations

from typing import Annotated

import typer

from vramcalc.cli.common import UnitsOpt
from vramcalc.cli.options import with_estimate_options
from vramcalc.cli.output import emit
from vramcalc.cli.pictures import BadPlot, print_chart, step_chart_of, sweep_chart_of
from vramcalc.core.options import OptionValues
from vramcalc.core.vocab import PictureFormat, PlotAxis


@with_estimate_options()
def timeline_command(
    model: Annotated[str | None, typer.Argument(help="Model preset name, alias, Hugging Face id or "
                                                "config.json path (or `model:` in --config).")] = None,
    *,
    opts: OptionValues,
    gpu: Annotated[str | None, typer.Option(help="GPU preset: its capacity is drawn as a line.")] = None,
    sweep: Annotated[PlotAxis | None, typer.Option(
        help="Instead of the step, draw the peak against this option with the largest value that fits "
             "(needs --gpu).")] = None,
    fmt: Annotated[PictureFormat, typer.Option(
        "--format", help="table (terminal chart), markdown (Mermaid), svg or html (a standalone picture), "
                         "json (the points).")] = "table",
    units: UnitsOpt = "GB",
    config: Annotated[str | None, typer.Option(help="Run file or another tool's config (one run).")] = None,
    no_color: Annotated[bool, typer.Option("--no-color", help="Plain output without colour (also NO_COLOR).")]
    = False,
) -> None:
    """Draw the predicted memory over one training step: forward layer by layer, the loss, backward layer
    by layer, the optimizer step; each component its colour (a letter without colour), the GPU's capacity
    as a line, the peak marked and named.

    Example: vramcalc timeline mistral-7b --method qlora --gpu rtx4090
    """
    from vramcalc.cli.commands.estimate import estimate_rows
    from vramcalc.cli.runs import margin_of

    rows = estimate_rows(model, gpu, None, config, opts, margin_of(None))
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
    if fmt == "json":
        from vramcalc.core.memory.timeline import timeline

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
