"""Presentation: byte formatting, the estimate report, and the JSON/YAML/Markdown documents.

The report is built once, as lines of (text, style) segments, without importing rich: the Typer path
prints it through rich (colour on a terminal) and the fast path prints the same lines as plain text,
so the two cannot differ.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from vramcalc.core.describe import assumptions, settings
from vramcalc.core.fit import Verdict
from vramcalc.core.memory import COMPONENTS, Breakdown
from vramcalc.core.units import GIB, UNIT_BYTES
from vramcalc.core.vocab import METHOD_LABELS

if TYPE_CHECKING:  # annotations only: the fast path renders without importing pydantic or rich
    from vramcalc.core.margin import Margin
    from vramcalc.core.specs import GpuSpec, ModelSpec, TrainingSpec

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


def to_json(b: Breakdown, t: TrainingSpec, v: Verdict | None, unit: str = "GB", status: str | None = None,
            margin: Margin | None = None, family: str = "") -> dict[str, Any]:
    """The machine-readable document: sizes are integer bytes, keys are stable."""
    doc = {
        "model": b.model,
        "parameters": b.parameters,
        "active_parameters": b.active_parameters,
        "trainable_parameters": b.trainable_parameters,
        "settings": settings(t, family),
        "components": {c: b.component(c) for c in COMPONENTS},
        "details": dict(b.details),
        "phases": dict(b.phases),
        "peak_bytes": b.peak_bytes,
        "peak_phase": b.peak_phase,
        "tensor_peak_bytes": b.tensor_peak_bytes,
        "reserved_peak_bytes": b.reserved_peak_bytes,
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
    if t.mode == "serve":
        return f"{name} · vLLM serve · {b.parameters:,} parameters" + (" · per GPU" if b.parallelism else "")
    per_gpu = " · per GPU" if b.parallelism is not None else ""
    return (f"{name} · {METHOD_LABELS[t.method]} · {b.parameters:,} parameters, "
            f"{b.trainable_parameters:,} trainable{per_gpu}")


# A number and its unit stay on one line when a paragraph wraps: `25.8 GB`, `7 %`, `24 GiB`.
_NUMBER_UNIT = re.compile(r"(\d) (GB|GiB|MB|MiB|TB|%)(?=\W|$)")


def wrap(text: str, width: int) -> list[str]:
    """Word-wrap one paragraph at `width` columns; long words are kept whole, and a number keeps its unit."""
    import textwrap

    glued = _NUMBER_UNIT.sub("\\1\u00a0\\2", text)  # textwrap breaks only at ASCII whitespace
    lines = textwrap.wrap(glued, max(width, 20), break_long_words=False, break_on_hyphens=False) or [""]
    return [line.replace("\u00a0", " ") for line in lines]


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
    from vramcalc.cli import bars

    out: list[Line] = [[(x, "bold")] for x in wrap(title(model, b, t), width)]
    out += _table_lines(b, unit)
    cap = v.gpu.memory_bytes if v is not None else None
    out += bars.figure_lines(b, cap, v.gpu.display_name if v is not None else None, unit, colour, width)
    out += [[(x, "dim")] for x in wrap("assumptions: " + assumptions(t, model.family), width)]
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
    lines += ["", f"Assumptions: {assumptions(t, model.family)}"]
    if v is not None:
        lines += ["", f"**{verdict_line(v, unit)}**"]
    lines += [""] + [f"- {n}" for n in b.notes]
    return "\n".join(lines) + "\n"
