"""`vramcalc trace`: run one real training step under FakeTensorMode and compare it with the estimate.

`--device cuda` runs the same step on the real GPU instead (trace/_cuda_run.py: random weights from the
config) and compares the estimate's tensor, reserved and device peaks with `max_memory_allocated`,
`max_memory_reserved` and NVML's used memory. Without CUDA it refuses in one line (exit 2).

Needs the `trace` extra (torch, transformers, peft); imported lazily, so `vramcalc estimate` never
loads torch. Exit codes as for `estimate`: 2 for bad input or a missing extra (one line on stderr).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vramcalc.cli.common import FormatOpt, UnitsOpt, complete_model, rich_console
from vramcalc.cli.options import with_estimate_options
from vramcalc.cli.output import emit, fail
from vramcalc.core.errors import BadInput
from vramcalc.core.options import OptionValues
from vramcalc.core.vocab import TraceDevice

DeviceOpt = Annotated[TraceDevice, typer.Option(
    "--device", help="fake: trace on fake tensors (no GPU); cuda: run the step on this machine's GPU and read "
                     "max_memory_allocated, max_memory_reserved and NVML.")]
VariableOpt = Annotated[bool, typer.Option(
    "--variable-lengths/--fixed-lengths", help="With --device cuda: right-padded batches of random length up to "
                                                "--seq-len (a dynamic-padding collator), or all --seq-len.")]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, max=64,
                                       help="With --device cuda: measured steps after the warm-up step.")]


def compare_cuda(b: Any, r: Any) -> dict[str, Any]:
    """Estimate (Breakdown) vs a real-GPU CudaReading: bytes, and the error of each figure in percent."""
    context = int(b.details.get("overhead.cuda_context", 0))
    est = {"tensor_peak_bytes": b.tensor_peak_bytes, "reserved_peak_bytes": b.reserved_peak_bytes,
           "device_peak_bytes": b.reserved_peak_bytes + context, "peak_bytes": b.peak_bytes,
           "peak_phase": b.peak_phase}
    nvml = r.nvml_used_bytes
    error = {"allocated_pct": _error_pct(b.tensor_peak_bytes, r.max_allocated_bytes),
             "reserved_pct": _error_pct(b.reserved_peak_bytes, r.max_reserved_bytes),
             "nvml_pct": _error_pct(b.reserved_peak_bytes + context, nvml) if nvml else None}
    return {"estimate": est, "measured": r.as_dict(), "error": error}


def _error_pct(est: int, ref: int) -> float | None:
    """(estimate − trace) / trace in percent, rounded to 0.01; None when the trace has nothing."""
    return round(100.0 * (est - ref) / ref, 2) if ref else None


def compare(b: Any, r: Any) -> dict[str, Any]:
    """Estimate (Breakdown) vs trace (TraceResult): integer bytes, error in percent per component.

    The trace's categories are what is alive at its peak moment; the estimate's weights and optimizer
    states are always alive, so they compare directly; the rest (gradients, activations, temporaries at
    the peak) is compared as one figure. Phases compare peak with peak.
    """
    cat = r.by_category_at_peak
    t_weights = cat["parameters"] + cat["buffers"]
    t_rest = r.peak_bytes - t_weights - cat["optimizer_state"]
    e_rest = b.tensor_peak_bytes - b.weights - b.optimizer_state
    trace_doc = {"peak_bytes": r.peak_bytes, "peak_phase": r.peak_phase, "peak_op": r.peak_op,
                 "phases": dict(r.phase_peaks), "by_category_at_peak": dict(cat)}
    est_doc = {"peak_bytes": b.tensor_peak_bytes, "peak_phase": b.peak_phase, "phases": dict(b.phases),
               "weights": b.weights, "gradients": b.gradients, "optimizer_state": b.optimizer_state,
               "activations": b.activations, "temporaries": b.temporaries}
    error = {"peak_pct": _error_pct(b.tensor_peak_bytes, r.peak_bytes),
             "peak_phase_matches": b.peak_phase == r.peak_phase,
             "weights_pct": _error_pct(b.weights, t_weights),
             "optimizer_state_pct": _error_pct(b.optimizer_state, cat["optimizer_state"]),
             "rest_at_peak_pct": _error_pct(e_rest, t_rest),
             # training: forward, backward, optimizer_step; --mode inference: prefill, decode
             **{f"{p}_pct": _error_pct(b.phases[p], r.phase_peaks[p]) for p in r.phase_peaks}}
    return {"trace": trace_doc, "estimate": est_doc, "error": error}


@with_estimate_options()
def trace_command(
    model: Annotated[str, typer.Argument(help="Model preset name, alias, Hugging Face id or config.json path.",
                                         autocompletion=complete_model)],
    *,
    opts: OptionValues,
    fmt: FormatOpt = "table",
    units: UnitsOpt = "GB",
    device: DeviceOpt = "fake",
    variable_lengths: VariableOpt = False,
    steps: StepsOpt = 2,
) -> None:
    """Trace one training step, or generate() with --mode inference, on fake tensors (no GPU) and compare.

    --device cuda runs it on the GPU with random weights and reads the real allocator and NVML.
    Example: vramcalc trace qwen2.5-0.5b --method lora --seq-len 1024
    """
    from vramcalc.cli.common import training_spec
    from vramcalc.core.errors import VramcalcError
    from vramcalc.core.memory import estimate as run_estimate
    from vramcalc.core.options import OptionError
    from vramcalc.io.resolve import resolve_model
    from vramcalc.trace import trace

    try:
        spec, _ = resolve_model(model)
        training = training_spec(opts.run())
        hf_rank = training.tp > 1 and training.tp_layout == "hf"  # one rank emulated (trace/_tp.py); gpus = tp
        if ((training.gpus_per_node * training.nodes > 1 and not hf_rank) or (training.tp > 1 and not hf_rank)
                or training.pp > 1 or training.zero or training.fsdp != "none" or training.offload != "none"):
            # the tracer runs one process on one device: its numbers are not the per-GPU estimate's
            raise BadInput("trace runs on one GPU: drop --gpus/--nodes/--tp/--pp/--zero/--fsdp/--offload "
                           "(the estimate is per GPU of the sharded run)")
        breakdown = run_estimate(spec, training)
        if device == "cuda":
            from vramcalc.trace import trace_cuda

            reading = trace_cuda(spec, training, variable_lengths=variable_lengths, steps=steps)
        elif variable_lengths or steps != 2:
            raise BadInput("--variable-lengths and --steps apply to --device cuda (the fake trace runs two "
                           "fixed-length steps): add --device cuda or drop them")
        else:
            result = trace(spec, training)
    except (VramcalcError, OptionError, NotImplementedError) as e:
        raise fail(e) from None
    if device == "cuda":
        _print_cuda(spec.name, compare_cuda(breakdown, reading), fmt, units)
        return
    doc = compare(breakdown, result)
    if fmt in ("json", "yaml"):
        emit({"model": spec.name, "units": "bytes", **doc}, fmt)
        return
    if fmt == "csv":
        from vramcalc.cli.output import csv_text

        est, tr, err = doc["estimate"], doc["trace"], doc["error"]
        cat = tr["by_category_at_peak"]
        metrics = [("peak", est["peak_bytes"], tr["peak_bytes"], err["peak_pct"])]
        metrics += [(f"{p}_peak", v, tr["phases"][p], err[f"{p}_pct"]) for p, v in est["phases"].items()]
        metrics += [("weights", est["weights"], cat["parameters"] + cat["buffers"], err["weights_pct"]),
                    ("optimizer_state", est["optimizer_state"], cat["optimizer_state"], err["optimizer_state_pct"])]
        typer.echo(csv_text(["metric", "estimate_bytes", "trace_bytes", "error_pct"],
                            [dict(zip(("metric", "estimate_bytes", "trace_bytes", "error_pct"), m, strict=True))
                             for m in metrics]), nl=False)
        return
    rows = _rows(doc, units)
    if fmt == "markdown":
        lines = [f"### {spec.name}: traced peak {_fmt(result.peak_bytes, units)} in {result.peak_phase}", "",
                 "| | estimate | trace | error |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        typer.echo("\n".join(lines))
        return
    from rich.table import Table

    tbl = Table("", "estimate", "trace", "error", show_edge=False,
                title=f"{spec.name}: traced peak {_fmt(result.peak_bytes, units)} in {result.peak_phase} "
                      f"(after {result.peak_op or '?'})", title_justify="left")
    for r in rows:
        tbl.add_row(*r)
    rich_console().print(tbl)
    cat = Table("category at the traced peak", "bytes", show_edge=False)
    for k, v in result.by_category_at_peak.items():
        cat.add_row(k, _fmt(v, units))
    rich_console().print(cat)


def _print_cuda(name: str, doc: dict[str, Any], fmt: str, units: str) -> None:
    """The real-GPU comparison as JSON/YAML, CSV, markdown or a rich table."""
    if fmt in ("json", "yaml"):
        emit({"model": name, "units": "bytes", "device": "cuda", **doc}, fmt)
        return
    e, m, err = doc["estimate"], doc["measured"], doc["error"]
    nvml = m["nvml_used"]
    metrics = [("tensor peak vs max_memory_allocated", e["tensor_peak_bytes"], m["max_memory_allocated"],
                err["allocated_pct"]),
               ("reserved peak vs max_memory_reserved", e["reserved_peak_bytes"], m["max_memory_reserved"],
                err["reserved_pct"]),
               ("reserved + CUDA context vs NVML used", e["device_peak_bytes"], nvml, err["nvml_pct"])]
    if fmt == "csv":
        from vramcalc.cli.output import csv_text

        keys = ("metric", "estimate_bytes", "measured_bytes", "error_pct")
        typer.echo(csv_text(list(keys), [dict(zip(keys, row, strict=True)) for row in metrics]), nl=False)
        return
    env = m["environment"]
    title = (f"{name} on {env.get('gpu', '?')} (driver {env.get('driver', '?')}, torch {env.get('torch', '?')}, "
             f"CUDA {env.get('cuda', '?')}): lengths {', '.join(map(str, m['lengths']))}")
    rows = [(label, _fmt(a, units), _fmt(b, units) if b is not None else m["nvml_source"], _pct(x))
            for label, a, b, x in metrics]
    if fmt == "markdown":
        lines = [f"### {title}", "", "| | estimate | measured | error |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        lines += ["", *(f"- {n}" for n in m["notes"])]
        typer.echo("\n".join(lines))
        return
    from rich.table import Table

    tbl = Table("", "estimate", "measured", "error", show_edge=False, title=title, title_justify="left")
    for r in rows:
        tbl.add_row(*r)
    console = rich_console()
    console.print(tbl)
    for n in m["notes"]:
        console.print(f"note: {n}", highlight=False, soft_wrap=True)


def _fmt(n: int, units: str) -> str:
    from vramcalc.cli.render import format_bytes

    return format_bytes(n, units)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.2f} %"


def _rows(doc: dict[str, Any], units: str) -> list[tuple[str, str, str, str]]:
    e, t, err = doc["estimate"], doc["trace"], doc["error"]
    cat = t["by_category_at_peak"]
    rows = [("tensor peak", _fmt(e["peak_bytes"], units), _fmt(t["peak_bytes"], units), _pct(err["peak_pct"])),
            ("peak phase", e["peak_phase"], t["peak_phase"], "ok" if err["peak_phase_matches"] else "differs")]
    for p, v in e["phases"].items():
        rows.append((f"{p} peak", _fmt(v, units), _fmt(t["phases"][p], units), _pct(err[f"{p}_pct"])))
    t_weights = cat["parameters"] + cat["buffers"]
    rows.append(("weights", _fmt(e["weights"], units), _fmt(t_weights, units), _pct(err["weights_pct"])))
    rows.append(("optimizer state", _fmt(e["optimizer_state"], units), _fmt(cat["optimizer_state"], units),
                 _pct(err["optimizer_state_pct"])))
    e_rest = e["peak_bytes"] - e["weights"] - e["optimizer_state"]
    t_rest = t["peak_bytes"] - t_weights - cat["optimizer_state"]
    rows.append(("gradients + activations + temporaries at peak", _fmt(e_rest, units), _fmt(t_rest, units),
                 _pct(err["rest_at_peak_pct"])))
    return rows
