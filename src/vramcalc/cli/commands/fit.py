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
    training_spec,
)
from vramcalc.cli.options import with_estimate_options
from vramcalc.cli.output import console, csv_text, emit
from vramcalc.cli.runs import STATUS_STYLE, margin_of, targets
from vramcalc.core.options import OptionValues
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
    if training.mode == "serve":  # vLLM: concurrency, max_model_len, utilization, smallest GPU (memory/vllm.py)
        doc = _serve_doc(spec, training, target, m, units, keep_margin=margin is not None)
        _print_serve_fit(doc, fmt, units)
        if check and doc["status"] == "DOES NOT FIT":
            raise typer.Exit(code=1)
        return
    rep = fit_report(spec, training, target.memory_bytes, m, limits_keep_margin=margin is not None)
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
        "settings": render.settings(training, spec.family),
        "peak_bytes": rep.peak_bytes,
        "fits": rep.status != "DOES NOT FIT",
        "status": rep.status,
        "headroom_bytes": target.memory_bytes - rep.peak_bytes,
        "margin": m.doc(rep.peak_bytes),
        "max_batch_size": rep.max_batch_size,
        "max_seq_len": rep.max_seq_len,
        "max_lora_rank": rep.max_lora_rank,
        "limits_budget_bytes": rep.limits_budget_bytes,
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
            else "n/a (images)" if key == "max_seq_len" and "image_size" in doc["settings"]
            else "nothing fits"
        )
    capped = " (search cap)" if value == doc["caps"].get(key) else ""
    return f"{value:,}{capped}"


def _limits_margin_text(doc: dict[str, Any], units: str) -> str:
    """With --margin the limits keep it (searches.fit_report): say so, or the reader takes them as filling the GPU."""
    from vramcalc.cli.render import format_bytes

    budget = doc.get("limits_budget_bytes")
    if budget is None or budget == doc["gpu"]["memory_bytes"]:
        return ""
    return (f"limits keep the --margin of {doc['margin']['fraction'] * 100:g} %: each is the largest whose peak "
            f"stays within {format_bytes(budget, units)}")


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
    keep = _limits_margin_text(doc, units)
    if fmt == "markdown":
        lines = [f"### {head}", "", *([keep, ""] if keep else []), "| limit | value |", "| --- | ---: |"]
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
    if keep:
        con.print(f"  {keep}", soft_wrap=True)
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




def _serve_doc(spec: Any, training: Any, target: Any, m: Any, units: str, keep_margin: bool = False) -> dict[str, Any]:
    """`fit --mode serve`: what a vLLM server of `spec` holds on `target`, and the smallest GPU preset for the run.

    With --margin (`keep_margin`) the smallest GPU preset is the smallest that `estimate` calls FITS (the margin kept,
    as fit's training limits keep it); the concurrency and max_model_len stay vLLM's own: the pool vLLM allocates
    from gpu_memory_utilization, which no margin of ours changes."""
    from vramcalc.cli import render
    from vramcalc.core.margin import classify
    from vramcalc.core.memory import vllm
    from vramcalc.io import presets

    f = vllm.serve_fit(spec, training, target.memory_bytes, target.name)
    report, _ = vllm.gpu_report(spec, vllm.with_gpu_defaults(spec, training, target.memory_bytes, target.name),
                                target.memory_bytes, target.name)
    status = classify(f.min_gpu_bytes, target.memory_bytes, m) if f.serves else "DOES NOT FIT"
    smallest = None
    for g in sorted(presets.gpus().specs, key=lambda g: (g.memory_bytes, g.name)):
        budget = m.largest_peak(g.memory_bytes) if keep_margin else g.memory_bytes
        if vllm.min_gpu_bytes(spec, training, training.batch_size, g.memory_bytes, g.name) <= budget:
            smallest = {"name": g.name, "display_name": g.display_name, "memory_bytes": g.memory_bytes}
            break
    return {
        "model": spec.name,
        "gpu": {"name": target.name, "display_name": target.display_name, "memory_bytes": target.memory_bytes},
        "settings": render.settings(training, spec.family),
        "peak_bytes": f.min_gpu_bytes,
        "fits": status != "DOES NOT FIT",
        "status": status,
        "headroom_bytes": target.memory_bytes - f.min_gpu_bytes,
        "margin": m.doc(f.min_gpu_bytes),
        "request_tokens": training.seq_len,
        "requests": training.batch_size,
        "max_concurrent_requests": f.concurrent_requests,
        "pool_concurrent_requests": f.pool_requests,
        "max_num_seqs": f.settings.max_num_seqs,
        "max_model_len": f.settings.max_model_len,
        "longest_max_model_len": f.pool.max_len_that_fits,
        "gpu_memory_utilization": f.settings.gpu_memory_utilization,
        "gpu_memory_utilization_needed": f.utilization_needed,
        "kv_cache_bytes": f.pool.pool_bytes,
        "kv_cache_tokens": f.pool.tokens,
        "num_blocks": f.pool.num_blocks,
        "smallest_gpu": smallest,
        "smallest_gpu_keeps_margin": keep_margin,
        "units": units,
        "notes": list(report),
    }


def _print_serve_fit(doc: dict[str, Any], fmt: str, units: str) -> None:
    from vramcalc.cli.render import format_bytes

    if fmt in ("json", "yaml"):
        emit(doc, fmt)
        return
    keys = ["model", "gpu", "status", "request_tokens", "max_concurrent_requests", "longest_max_model_len",
            "gpu_memory_utilization_needed", "smallest_gpu"]
    if fmt == "csv":
        row = {**doc, "gpu": doc["gpu"]["name"], "smallest_gpu": (doc["smallest_gpu"] or {}).get("name", "")}
        typer.echo(csv_text(keys, [row]), nl=False)
        return
    need = doc["gpu_memory_utilization_needed"]
    small = doc["smallest_gpu"]
    head = (f"{doc['model']} served by vLLM on {doc['gpu']['display_name']} "
            f"({format_bytes(doc['gpu']['memory_bytes'], units)}): {doc['requests']:,} request(s) of "
            f"{doc['request_tokens']:,} tokens need a {format_bytes(doc['peak_bytes'], units)} GPU, {doc['status']}")
    limits = [
        (f"concurrent requests of {doc['request_tokens']:,} tokens",
         f"{doc['max_concurrent_requests']:,}" + (f" (max_num_seqs {doc['max_num_seqs']}; the pool holds "
                                                   f"{doc['pool_concurrent_requests']:,})"
                                                   if doc["pool_concurrent_requests"] > doc["max_num_seqs"] else "")),
        ("longest max_model_len", f"{doc['longest_max_model_len']:,}" if doc["longest_max_model_len"]
         else "none (vLLM cannot start)"),
        (f"gpu_memory_utilization for {doc['requests']:,} request(s)", f"{need:.2f}" if need is not None
         else "none is enough on this GPU"),
        ("smallest GPU preset", f"{small['display_name']} ({format_bytes(small['memory_bytes'], units)})"
         if small else "none of the presets"),
    ]
    keep = (f"the smallest GPU preset keeps the --margin of {doc['margin']['fraction'] * 100:g} %; the concurrency "
            "and max_model_len are the pool vLLM allocates from gpu_memory_utilization, which the margin does not "
            "change" if doc["smallest_gpu_keeps_margin"] else "")
    if fmt == "markdown":
        lines = [f"### {head}", "", *([keep, ""] if keep else []), "| limit | value |", "| --- | ---: |"]
        lines += [f"| {a} | {b} |" for a, b in limits]
        lines += [""] + [f"- {n}" for n in doc["notes"]]
        typer.echo("\n".join(lines) + "\n", nl=False)
        return
    con = console()
    con.print(head, style=STATUS_STYLE[doc["status"]], soft_wrap=True)
    if keep:
        con.print(f"  {keep}", soft_wrap=True)
    for a, b in limits:
        con.print(f"  {a}: {b}", soft_wrap=True)
    for n in doc["notes"]:
        con.print(f"note: {n}", style="dim", soft_wrap=True)
