"""`vramcalc gpus --fits MODEL`: which GPU presets fit a run, smallest first, with headroom."""

from __future__ import annotations

from typing import Any

import typer

from vramcalc.cli.common import training_spec
from vramcalc.cli.output import console, csv_text, emit
from vramcalc.cli.runs import STATUS_STYLE, margin_of
from vramcalc.core.options import OptionValues
from vramcalc.io.resolve import resolve_model


def gpus_fit(
    model: str, opts: OptionValues, margin: str | None, config: str | None, fmt: str, units: str, check: bool
) -> None:
    """Which GPU presets fit a run, smallest first, with headroom."""
    from vramcalc.cli import render
    from vramcalc.core.margin import classify
    from vramcalc.core.memory import estimate as run_estimate
    from vramcalc.core.specs import GpuSpec
    from vramcalc.io import presets, runfiles

    m = margin_of(margin)
    run = runfiles.load(config)[0] if config else runfiles.Run()
    spec, _ = resolve_model(model)
    training = training_spec(opts.run(run.options))
    b = run_estimate(spec, training)
    all_gpus = [g for g in presets.gpus().specs if isinstance(g, GpuSpec)]
    rows: list[dict[str, Any]] = []
    for g in sorted(all_gpus, key=lambda g: (g.memory_bytes, g.name)):
        status = classify(b.peak_bytes, g.memory_bytes, m)
        if status == "FITS" and not b.activations_modeled:
            status = "TIGHT"  # activations unknown: never a plain FITS
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
    from vramcalc.core.checks import check_run
    from vramcalc.core.fit import precision_note

    notes = list(check_run(spec, training))
    if not b.activations_modeled:
        notes.append("activations not modeled: this preset gives only a parameter count")
    no_bf16 = [g.display_name for g in all_gpus if any(r["name"] == g.name for r in rows)
               and precision_note(g, training.precision)]
    if no_bf16:
        notes.append(f"no bf16 support on {', '.join(no_bf16)}: there use fp16 variants "
                     "(--precision fp16 / mixed-fp16 / amp-fp16).")
    doc = {
        "model": spec.name,
        "settings": render.settings(training, spec.family),
        "peak_bytes": b.peak_bytes,
        "margin": m.doc(b.peak_bytes),
        "units": units,
        "gpus": rows,
        "notes": notes,
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
        lines += [""] * bool(notes) + [f"- {n}" for n in notes]
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
        for n in notes:
            con.print(f"note: {n}")
    if check and not rows:
        raise typer.Exit(code=1)
