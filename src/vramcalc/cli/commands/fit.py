"""`vramcalc fit`: the largest batch, sequence and LoRA rank that fit, and what makes a run fit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vramcalc.cli.common import (
    BadInput,
    CheckOpt,
    ConfigOpt,
    FormatOpt,
    MarginOpt,
    MaxMemoryOpt,
    PlotAxisOpt,
    UnitsOpt,
)
from vramcalc.cli.options import with_estimate_options
from vramcalc.cli.output import console, csv_text, emit
from vramcalc.cli.runs import STATUS_STYLE, margin_of, targets
from vramcalc.core.options import OptionValues, training_spec
from vramcalc.io.resolve import resolve_model


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
    from vramcalc.cli import render
    from vramcalc.core.searches import fit_report
    from vramcalc.io import runfiles

    m = margin_of(margin)
    run = runfiles.load(config)[0] if config else runfiles.Run()
    if config and len(runfiles.load(config)) != 1:
        raise BadInput(f"--config {config}: fit takes one run; this file holds several")
    ref = model or run.model
    if ref is None:
        raise BadInput("no model: pass MODEL or put `model:` in the run file")
    spec, _ = resolve_model(ref, Path(run.path).parent if run.path and model is None else None)
    if gpu and max_memory:  # as estimate: one budget (a run file's gpu yields to --max-memory)
        raise BadInput(f"--gpu {gpu} and --max-memory {max_memory} both set a budget: pass one of them")
    gpu_name = gpu or run.gpu
    found = targets([gpu_name] if gpu_name and not max_memory else [], max_memory)
    if not found:
        raise BadInput("fit needs a GPU: pass --gpu NAME (see: vramcalc gpus) or --max-memory 20GB")
    target = found[0]
    training = training_spec(opts.run(run.options))
    rep = fit_report(spec, training, target.memory_bytes, m)
    from vramcalc.core.saver_ranking import rank_savers
    from vramcalc.io.stacks import offering, stack_notes

    savers = rank_savers(spec, training, rep.peak_bytes, offering)
    if plot:  # issue 17: the peak against one option
        from vramcalc.cli.pictures import check_format, sweep_chart_of

        check_format(fmt, plot, "vramcalc fit --format json (max_batch_size, max_seq_len, max_lora_rank)")
        chart = sweep_chart_of(spec, training, target, plot, units)
    from vramcalc.core.fit import precision_note

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
        "savers": [g.as_dict() for g in savers],
        "min_gpus": rep.min_gpus,
        "units": units,
        "notes": list(rep.notes) + [n for n in [precision_note(target, training.precision)] if n]
        + stack_notes(training),
    }
    _print_fit(doc, fmt, units)
    if plot:
        from vramcalc.cli.pictures import print_chart

        print_chart(chart, fmt)
    if check and rep.status == "DOES NOT FIT":
        raise typer.Exit(code=1)


def _changes_text(changes: dict[str, Any]) -> str:
    from vramcalc.core.options import BY_NAME

    parts = []
    for k, v in changes.items():
        flag = BY_NAME[k].flag if k in BY_NAME else "--" + k.replace("_", "-")
        parts.append(flag if v is True else f"{flag} {v}")
    return " ".join(parts)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table after a blank line, numbers (every column but the first and the last) right-aligned."""
    if not rows:
        return []
    align = ["---", *(["---:"] * (len(head) - 2)), "---"]
    return ["", "| " + " | ".join(head) + " |", "| " + " | ".join(align) + " |",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _stacks_text(stacks: list[str]) -> str:
    return ", ".join(stacks) if stacks else "no stack preset (set the option)"


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
    from vramcalc.cli.render import format_bytes

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
        ] + [
            {
                "model": doc["model"],
                "gpu": doc["gpu"]["name"],
                "peak_bytes": g["peak_bytes"],
                "saver": _changes_text(g["changes"]),
                "saved_bytes": g["saved_bytes"],
                "stacks": " ".join(g["stacks"]),
            }
            for g in doc["savers"]
        ]
        typer.echo(csv_text([*cols, "suggestion", "saver", "saved_bytes", "stacks"], rows), nl=False)
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
        lines += _md_table(["change", "peak", "status"], [
            [f"`{_changes_text(s['changes'])}`", format_bytes(s["peak_bytes"], units), s["status"]]
            for s in doc["suggestions"]])
        lines += _md_table(["saver", "saves", "peak", "offered by"], [
            [f"`{_changes_text(g['changes'])}`", format_bytes(g["saved_bytes"], units),
             format_bytes(g["peak_bytes"], units), _stacks_text(g["stacks"])]
            for g in doc["savers"]])
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
    if doc["savers"]:
        con.print("memory savers, largest saving first (each alone, as estimated for this run):")
        for g in doc["savers"]:
            con.print(
                f"  {_changes_text(g['changes'])}: saves {format_bytes(g['saved_bytes'], units)} → "
                f"{format_bytes(g['peak_bytes'], units)} (offered by {_stacks_text(g['stacks'])})",
                soft_wrap=True,
            )
    if doc["min_gpus"] is not None:
        con.print(f"  GPUs of this kind needed with ZeRO-3: {doc['min_gpus']}", soft_wrap=True)
    con.print(f"margin: {margin_text_from_doc(doc)}", style="dim", soft_wrap=True)
    for n in doc["notes"]:
        con.print(f"note: {n}", style="dim", soft_wrap=True)


def margin_text_from_doc(doc: dict[str, Any]) -> str:
    from vramcalc.core.margin import Margin

    return Margin(doc["margin"]["fraction"], doc["margin"]["source"]).describe()


