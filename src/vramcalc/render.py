"""Presentation: byte formatting, the estimate report, and the JSON/YAML/Markdown documents.

The report is built once, as lines of (text, style) segments, without importing rich: the Typer path
prints it through rich (colour on a terminal) and the fast path prints the same lines as plain text,
so the two cannot differ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vramcalc.fit import Verdict
from vramcalc.memory import COMPONENTS, RECIPES, Breakdown
from vramcalc.units import GIB, UNIT_BYTES

if TYPE_CHECKING:  # annotations only: the fast path renders without importing pydantic or rich
    from vramcalc.margin import Margin
    from vramcalc.specs import GpuSpec, ModelSpec, TrainingSpec

Segment = tuple[str, str]  # (text, rich style)
Line = list[Segment]

LABELS = {
    "weights": "weights",
    "gradients": "gradients",
    "optimizer_state": "optimizer state",
    "activations": "activations",
    "temporaries": "temporaries (peak transient)",
    "overhead": "runtime overhead",
    "communication": "communication buffers",
    "kv_cache": "KV cache",
}
METHOD_LABELS = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA", "freeze": "partial (freeze)"}


def format_bytes(n: int, unit: str = "GB") -> str:
    """`14.48 GB` (10^9) or `13.49 GiB` (2^30); two decimals, the unit always named."""
    return f"{n / UNIT_BYTES[unit]:,.2f} {unit}"


def gpu_capacity(gpu: GpuSpec) -> str:
    """Both units where they could be confused: `24 GiB = 25.8 GB`."""
    return f"{gpu.memory_bytes / GIB:.3g} GiB = {gpu.memory_bytes / 10**9:.1f} GB"


def verdict_line(v: Verdict, unit: str, status: str | None = None, margin_note: str | None = None) -> str:
    """`DOES NOT FIT on NVIDIA GeForce RTX 4090 (24 GiB = 25.8 GB): needs 90.7 GB, 64.9 GB short`.

    `status` TIGHT (fits, inside the margin) replaces FITS; `margin_note` names the margin used.
    """
    need = f"{v.needed_bytes / UNIT_BYTES[unit]:,.1f} {unit}"
    margin = f"{abs(v.headroom_bytes) / UNIT_BYTES[unit]:,.1f} {unit}"
    suffix = f" (margin: {margin_note})" if margin_note else ""
    where = f"on {v.gpu.display_name} ({gpu_capacity(v.gpu)})"
    if v.gpus > 1:
        where = f"per GPU × {v.gpus} " + where
    if status == "TIGHT":
        return f"TIGHT {where}: needs {need}, only {margin} headroom{suffix}"
    if v.fits:
        return f"FITS {where}: needs {need}, {margin} headroom{suffix}"
    return f"DOES NOT FIT {where}: needs {need}, {margin} short{suffix}"


def settings(t: TrainingSpec) -> dict[str, Any]:
    """Every assumption of the estimate, keyed by option name (JSON `settings`)."""
    out: dict[str, Any] = {
        "mode": t.mode, "method": t.method, "precision": t.precision, "optimizer": t.optimizer,
        "optimizer_impl": t.optimizer_impl, "batch_size": t.batch_size, "seq_len": t.seq_len,
        "grad_accum": t.grad_accum, "grad_checkpointing": t.grad_checkpointing, "attention": t.attention,
    }
    if t.method in ("lora", "qlora"):
        out.update(lora_rank=t.lora_rank, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                   lora_targets=",".join(t.lora_targets), adapter_dtype=t.adapter_dtype)
    if t.method == "qlora":
        out.update(quant_bits=t.quant_bits, double_quant=t.double_quant)
    if t.method == "freeze":
        out.update(freeze_layers=t.freeze_layers, train_head=t.train_head)
    if t.gpus_per_node * t.nodes > 1 or t.zero or t.fsdp != "none" or t.offload != "none":
        out.update(gpus_per_node=t.gpus_per_node, nodes=t.nodes, zero=t.zero, fsdp=t.fsdp, offload=t.offload,
                   tp=t.tp, pp=t.pp, sequence_parallel=t.sequence_parallel)
    if t.mode == "inference":
        out.update(weight_dtype=t.weight_dtype, kv_dtype=t.kv_dtype, quant_group_size=t.quant_group_size,
                   tp=t.tp, pp=t.pp)
    out.update(_saver_settings(t))
    return out


def _saver_settings(t: TrainingSpec) -> dict[str, Any]:
    """The memory savers (memory/loss.py, memory/savers.py) that differ from plain Hugging Face."""
    out: dict[str, Any] = {}
    if t.loss != "hf":
        out["loss"] = t.loss
        if t.loss == "chunked":
            out["loss_chunks"] = t.loss_chunks
    if t.ac_every > 1:
        out["ac_every"] = t.ac_every
    if t.activation_offload:
        out["activation_offload"] = True
    if t.optimizer_in_bwd:
        out["optimizer_in_bwd"] = True
    return out


def assumptions(t: TrainingSpec) -> str:
    """One readable line of the assumptions, so the number can be reproduced."""
    r = RECIPES[t.precision]
    parts = [
        f"precision {t.precision} (weights {r.weight}, grads {r.grad}, compute {r.compute}"
        + (", fp32 master weights" if r.master_weights else "") + ")",
        f"optimizer {t.optimizer} ({t.optimizer_impl})",
        f"batch {t.batch_size} × seq {t.seq_len}" + (f" × accum {t.grad_accum}" if t.grad_accum > 1 else ""),
        f"attention {t.attention}",
        f"checkpointing {'on' if t.grad_checkpointing else 'off'}",
    ]
    if t.method in ("lora", "qlora"):
        parts.append(f"LoRA r={t.lora_rank} on {','.join(t.lora_targets)} ({t.adapter_dtype})")
    if t.method == "qlora":
        parts.append(f"base {'NF4' if t.quant_bits == 4 else 'int8'}"
                     + (" + double quant" if t.quant_bits == 4 and t.double_quant else ""))
    if t.method == "freeze":
        parts.append(f"{t.freeze_layers} layers frozen" + ("" if t.train_head else ", head frozen"))
    savers = _saver_settings(t)
    if savers:
        parts.append("savers: " + ", ".join(k.replace("_", "-") + ("" if v is True else f" {v}")
                                            for k, v in savers.items()))
    if t.mode == "inference":
        parts = [f"inference, batch {t.batch_size} × context {t.seq_len}", f"weights {t.weight_dtype}",
                 f"KV cache {t.kv_dtype}"]
    gpus = t.gpus_per_node * t.nodes
    if gpus > 1 or t.zero or t.fsdp != "none" or t.offload != "none":
        strategy = f"ZeRO-{t.zero}" if t.zero else f"FSDP {t.fsdp}" if t.fsdp != "none" else "DDP"
        parts.append(f"{gpus} GPU{'s' if gpus > 1 else ''} ({t.gpus_per_node}/node × {t.nodes}), {strategy}"
                     + (f", tp {t.tp}" if t.tp > 1 else "") + (f", pp {t.pp}" if t.pp > 1 else "")
                     + (f", offload {t.offload}" if t.offload != "none" else ""))
    return " · ".join(parts)


def to_json(b: Breakdown, t: TrainingSpec, v: Verdict | None, unit: str = "GB", status: str | None = None,
            margin: Margin | None = None) -> dict[str, Any]:
    """The machine-readable document: sizes are integer bytes, keys are stable."""
    doc = {
        "model": b.model,
        "parameters": b.parameters,
        "active_parameters": b.active_parameters,
        "trainable_parameters": b.trainable_parameters,
        "settings": settings(t),
        "components": {c: b.component(c) for c in COMPONENTS},
        "details": dict(b.details),
        "phases": dict(b.phases),
        "peak_bytes": b.peak_bytes,
        "peak_phase": b.peak_phase,
        "tensor_peak_bytes": b.tensor_peak_bytes,
        "sum_bytes": b.sum_bytes,
        "activations_modeled": b.activations_modeled,
        "gpu": None if v is None else {
            "name": v.gpu.name, "display_name": v.gpu.display_name, "memory_bytes": v.gpu.memory_bytes},
        "fits": None if v is None else v.fits,
        "headroom_bytes": None if v is None else v.headroom_bytes,
        "units": unit,
        "notes": list(b.notes),
        **({"per_gpu": True, "parallelism": dict(b.parallelism), "cpu_offload_bytes": b.cpu_offload_bytes}
           if b.parallelism is not None else {}),
    }
    if margin is not None:  # the verdict's third state and the margin it used (margin.py)
        doc["status"] = status
        doc["margin"] = margin.doc(b.peak_bytes)
    return doc


def _rows(b: Breakdown, unit: str) -> list[tuple[str, str, str]]:
    total = b.sum_bytes or 1
    rows = [(LABELS[c], format_bytes(b.component(c), unit), f"{100 * b.component(c) / total:.1f} %")
            if c != "activations" or b.activations_modeled else (LABELS[c], "not modeled", "")
            for c in b.shown_components()]
    return rows


def title(model: ModelSpec, b: Breakdown, t: TrainingSpec) -> str:
    name = model.display_name or model.name
    if t.mode == "inference":
        return f"{name} · inference · {b.parameters:,} parameters"
    per_gpu = " · per GPU" if b.parallelism is not None else ""
    return (f"{name} · {METHOD_LABELS[t.method]} · {b.parameters:,} parameters, "
            f"{b.trainable_parameters:,} trainable{per_gpu}")


def wrap(text: str, width: int) -> list[str]:
    """Word-wrap one paragraph at `width` columns (long words are kept whole)."""
    import textwrap

    return textwrap.wrap(text, max(width, 20), break_long_words=False, break_on_hyphens=False) or [""]


def _table_lines(b: Breakdown, unit: str) -> list[Line]:
    """The component table, drawn like rich's HEAVY_HEAD box without edges."""
    header = ["component", f"memory ({unit})", "share"]
    body = [list(r) for r in _rows(b, unit)]
    tail = [["sum of components", format_bytes(b.sum_bytes, unit), ""]]
    for phase in b.phases:
        marker = "  ← peak" if phase == b.peak_phase else ""
        tail.append([f"tensors at {phase.replace('_', ' ')}{marker}", format_bytes(b.phases[phase], unit), ""])
    peak = ["peak (tensors + overhead)", format_bytes(b.peak_bytes, unit), ""]
    widths = [max(len(row[i]) for row in [header, *body, *tail, peak]) for i in range(3)]

    def row(cells: list[str], sep: str) -> str:
        parts = [f" {cells[0].ljust(widths[0])} "] + [f" {c.rjust(w)} " for c, w in zip(cells[1:], widths[1:],
                                                                                          strict=True)]
        return sep.join(parts).rstrip()

    out: list[Line] = [[(row(header, "┃"), "bold")], [("╇".join("━" * (w + 2) for w in widths), "")]]
    out += [[(row(r, "│"), "")] for r in body]
    out.append([("┼".join("─" * (w + 2) for w in widths), "")])
    out += [[(row(r, "│"), "")] for r in tail]
    out.append([(row(peak, "│"), "bold")])
    return out


def report_lines(model: ModelSpec, b: Breakdown, t: TrainingSpec, v: Verdict | None, unit: str, width: int,
                 status: str | None = None, margin: Margin | None = None, colour: bool = False) -> list[Line]:
    """The estimate report: title, table, bar figure, assumptions, verdict (with its margin), notes."""
    from vramcalc import bars

    out: list[Line] = [[(x, "bold")] for x in wrap(title(model, b, t), width)]
    out += _table_lines(b, unit)
    cap = v.gpu.memory_bytes if v is not None else None
    out += bars.figure_lines(b, cap, v.gpu.display_name if v is not None else None, unit, colour, width)
    out += [[(x, "dim")] for x in wrap("assumptions: " + assumptions(t), width)]
    if b.cpu_offload_bytes:
        out.append([(f"CPU RAM for offloaded states: {format_bytes(b.cpu_offload_bytes, unit)} per node", "")])
    if v is not None:
        style = {"TIGHT": "bold yellow"}.get(status or "", "bold green" if v.fits else "bold red")
        line = verdict_line(v, unit, status, margin.describe() if margin is not None else None)
        out += [[(x, style)] for x in wrap(line, width)]
    for note in b.notes:
        out += [[(x, "dim")] for x in wrap("note: " + note, width)]
    return out


def plain(lines: list[Line]) -> str:
    """The report as plain text (what rich prints when stdout is not a terminal)."""
    return "".join("".join(text for text, _ in line) + "\n" for line in lines)


def markdown(model: ModelSpec, b: Breakdown, t: TrainingSpec, v: Verdict | None, unit: str) -> str:
    """The same report as a Markdown document (for pull-request comments)."""
    lines = [f"### {title(model, b, t)}", "", f"| component | memory ({unit}) | share |", "| --- | ---: | ---: |"]
    lines += [f"| {label} | {size} | {share} |" for label, size, share in _rows(b, unit)]
    lines.append(f"| **sum of components** | {format_bytes(b.sum_bytes, unit)} | |")
    if b.cpu_offload_bytes:
        lines.append(f"| CPU RAM per node (offload) | {format_bytes(b.cpu_offload_bytes, unit)} | |")
    for phase in b.phases:
        lines.append(f"| tensors at {phase.replace('_', ' ')} | {format_bytes(b.phases[phase], unit)} | |")
    lines.append(f"| **peak ({b.peak_phase}, + overhead)** | **{format_bytes(b.peak_bytes, unit)}** | |")
    lines += ["", f"Assumptions: {assumptions(t)}"]
    if v is not None:
        lines += ["", f"**{verdict_line(v, unit)}**"]
    lines += [""] + [f"- {n}" for n in b.notes]
    return "\n".join(lines) + "\n"
