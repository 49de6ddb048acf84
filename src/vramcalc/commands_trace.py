"""`vramcalc trace`: run one real training step under FakeTensorMode and compare it with the estimate.

Needs the `trace` extra (torch, transformers, peft); imported lazily, so `vramcalc estimate` never
loads torch. Exit codes as for `estimate`: 2 for bad input or a missing extra (one line on stderr).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from vramcalc.cli import BadInput, Format, Units, _complete_model, _console, _emit, _fail


def _error_pct(est: int, ref: int) -> float | None:
    """(estimate − trace) / trace in percent, rounded to 0.01; None when the trace has nothing."""
    return round(100.0 * (est - ref) / ref, 2) if ref else None


def compare(b: Any, r: Any) -> dict[str, Any]:
    """Estimate (Breakdown) vs trace (TraceResult): integer bytes, error in percent per component.

    The trace's categories are what is alive at its peak moment; the estimate's weights and optimizer
    states are always alive, so they compare directly; the rest (gradients, activations, temporaries at
    the peak) is compared as one figure. Phases compare peak with peak.
    """
    from vramcalc.memory import PHASES

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
             **{f"{p}_pct": _error_pct(b.phases[p], r.phase_peaks[p]) for p in PHASES}}
    return {"trace": trace_doc, "estimate": est_doc, "error": error}


def trace_command(
    model: Annotated[str, typer.Argument(help="Model preset name, alias or Hugging Face id.",
                                         autocompletion=_complete_model)],
    method: Annotated[Literal["full", "lora", "qlora", "freeze"], typer.Option(help="Fine-tuning method.")] = "full",
    precision: Annotated[Literal["bf16", "fp16", "pure-bf16", "pure-fp16", "mixed-bf16", "mixed-fp16", "amp-bf16",
                                 "amp-fp16", "fp32"],
                         typer.Option(help="What weights, grads and optimizer states are stored in.")] = "bf16",
    optimizer: Annotated[Literal["adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "sgd", "sgd-momentum",
                                 "adafactor", "lion"], typer.Option(help="Optimizer.")] = "adamw",
    optimizer_impl: Annotated[Literal["fused", "foreach", "for-loop"],
                              typer.Option(help="Optimizer kernel: fused (no temporaries), foreach (PyTorch's "
                                                "CUDA default), for-loop.")] = "fused",
    batch_size: Annotated[int, typer.Option(help="Micro-batch size per GPU.")] = 1,
    seq_len: Annotated[int, typer.Option(help="Sequence length in tokens.")] = 512,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    grad_checkpointing: Annotated[bool, typer.Option(help="Gradient (activation) checkpointing.")] = False,
    attention: Annotated[Literal["sdpa", "eager"],
                         typer.Option(help="Attention kernel: sdpa (flash / memory-efficient) or eager.")] = "sdpa",
    lora_rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 16,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha (no effect on memory).")] = 32.0,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout (p > 0 keeps a copy of each adapted input).")]
    = 0.0,
    lora_targets: Annotated[str, typer.Option(help="Comma-separated module names, or all-linear.")]
    = "q_proj,v_proj",
    adapter_dtype: Annotated[Literal["fp32", "bf16", "fp16"], typer.Option(help="LoRA adapter dtype.")] = "fp32",
    quant_bits: Annotated[int, typer.Option(help="QLoRA base: 4 (NF4) or 8 (int8).")] = 4,
    double_quant: Annotated[bool, typer.Option(help="QLoRA double quantization of the constants.")] = True,
    freeze_layers: Annotated[int | None, typer.Option(help="For --method freeze: layers frozen from the bottom.")]
    = None,
    train_head: Annotated[bool, typer.Option(help="For --method freeze: train the LM head.")] = True,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = "table",
    units: Annotated[Units, typer.Option(help="GB (10^9, as the seed texts count) or GiB (2^30).")] = "GB",
) -> None:
    """Trace one training step of the real transformers model (fake tensors, no GPU) and compare.

    Example: vramcalc trace qwen2.5-0.5b --method lora --seq-len 1024
    """
    from pydantic import ValidationError

    from vramcalc import presets
    from vramcalc.errors import VramcalcError
    from vramcalc.memory import estimate as run_estimate
    from vramcalc.specs import TrainingSpec
    from vramcalc.trace import trace

    try:
        if quant_bits not in (4, 8):
            raise BadInput(f"--quant-bits must be 4 or 8, not {quant_bits}")
        spec = presets.find_model(model)
        training = TrainingSpec(
            method=method, precision=precision, optimizer=optimizer, optimizer_impl=optimizer_impl,
            batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum, grad_checkpointing=grad_checkpointing,
            attention=attention, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            lora_targets=tuple(x.strip() for x in lora_targets.split(",") if x.strip()),
            adapter_dtype=adapter_dtype, quant_bits=4 if quant_bits == 4 else 8, double_quant=double_quant,
            freeze_layers=freeze_layers, train_head=train_head,
        )
        breakdown = run_estimate(spec, training)
        result = trace(spec, training)
    except (VramcalcError, ValidationError, BadInput, NotImplementedError) as e:
        raise _fail(e) from None
    doc = compare(breakdown, result)
    if fmt in ("json", "yaml"):
        _emit({"model": spec.name, "units": "bytes", **doc}, fmt)
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
    _console().print(tbl)
    cat = Table("category at the traced peak", "bytes", show_edge=False)
    for k, v in result.by_category_at_peak.items():
        cat.add_row(k, _fmt(v, units))
    _console().print(cat)


def _fmt(n: int, units: str) -> str:
    from vramcalc.render import format_bytes

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
