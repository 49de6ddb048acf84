"""Pictures of memory: one step over time (memory/timeline.py) and sweeps (sweep.py), for the terminal,
for Markdown (Mermaid `xychart-beta`, which GitHub renders) and as a standalone SVG or HTML page.

One `Chart` (columns of stacked bytes, the GPU capacities as lines, one marked column) and three
renderers. The terminal chart is drawn with rich's own primitives (styled `Text` segments): plotext and
similar libraries draw line and bar plots but not a stacked chart with a named marker and letters in place
of colours, and rich is already a dependency. Plain output (no terminal, --no-color, NO_COLOR) is ASCII
only: a letter per component, `=` for a capacity line, `v` over the marked column; it is deterministic for
a given width, and tests/golden/ pins it at 80 and 120 columns. Nothing here runs unless a picture is asked
for: the commands import this module lazily.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

from vramcalc.cli.bars import LETTERS, pack_items
from vramcalc.core.units import UNIT_BYTES

if TYPE_CHECKING:
    from rich.text import Text

    from vramcalc.core.memory.timeline import Timeline

# Terminal colours (rich names; bars.py uses the same) and their SVG/Mermaid equivalents.
TERM_COLOURS = {
    "weights": "blue", "optimizer_state": "yellow", "communication": "red", "kv_cache": "bright_green",
    "gradients": "magenta", "activations": "green", "temporaries": "cyan", "overhead": "bright_black",
    "peak": "blue",
}
HEX_COLOURS = {
    "weights": "#4e79a7", "optimizer_state": "#edc948", "communication": "#ff9da7", "kv_cache": "#8cd17d",
    "gradients": "#b07aa1", "activations": "#59a14f", "temporaries": "#76b7b2", "overhead": "#bab0ac",
    "peak": "#4e79a7",
}
CAPACITY_HEX = "#d62728"  # the capacity line: a red no component uses
CAPACITY_TEXT_HEX = "#a01010"  # its label: a darker red, for contrast on the white box
PLOT_LETTERS = {**LETTERS, "peak": "#"}
NAMES = {"optimizer_state": "optimizer state", "kv_cache": "KV cache", "peak": "peak memory"}
SPECIAL_WEIGHT = 3  # loss, loss backward, backward end, optimizer step: wider than one layer's column


@dataclass(frozen=True)
class Column:
    """One x position: its label, the group it belongs to (phase or axis), its stacked bytes."""

    label: str
    group: str
    parts: dict[str, int]  # stacking order, bottom first
    weight: int = 1  # relative width
    short: str = ""  # Mermaid's x-axis label

    @property
    def total_bytes(self) -> int:
        return sum(self.parts.values())


@dataclass(frozen=True)
class Chart:
    """What every renderer draws."""

    title: str
    columns: tuple[Column, ...]
    unit: str
    capacities: tuple[tuple[str, int], ...] = ()  # (label, bytes)
    mark: int | None = None  # the column to mark
    mark_label: str = ""
    x_title: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def components(self) -> list[str]:
        """The stacked components that are non-zero somewhere, bottom first."""
        names: list[str] = []
        for c in self.columns:
            names += [k for k, v in c.parts.items() if v and k not in names]
        order = list(self.columns[0].parts) if self.columns else []
        return sorted(names, key=order.index)

    def top_bytes(self) -> int:
        return max([c.total_bytes for c in self.columns] + [b for _, b in self.capacities] + [1])


def _fmt(n: int, unit: str) -> str:
    return f"{n / UNIT_BYTES[unit]:,.2f} {unit}"


# ---- building charts ------------------------------------------------------------------------------------

_PHASE_GROUP = {"forward": "forward", "backward": "backward", "optimizer_step": "step", "prefill": "prefill",
                "decode": "decode"}


def _short(label: str) -> str:
    """`forward layer 3` -> `F3`, `backward layer 3` -> `B3`; other labels as they are."""
    for long, letter in (("forward layer ", "F"), ("backward layer ", "B")):
        if label.startswith(long):
            return letter + label.removeprefix(long).replace(" start", "s").replace(" end", "e")
    return {"loss backward": "loss bwd", "backward end (embedding gradient)": "bwd end",
            "LM head backward (loss chunks)": "head bwd", "head's optimizer step (in backward)": "head step",
            "optimizer step": "step", "optimizer step (done in backward)": "step"}.get(label, label)


def step_chart(tl: Timeline, title: str, unit: str, capacity: tuple[str, int] | None) -> Chart:
    """The timeline of one step with the runtime overhead on top (the allocator keeps it all step long)."""
    b = tl.breakdown
    columns = []
    for p in tl.points:
        layer = p.label.startswith(("forward layer", "backward layer"))
        columns.append(Column(p.label, _PHASE_GROUP.get(p.phase, p.phase), {**p.components, "overhead": b.overhead},
                              1 if layer else SPECIAL_WEIGHT, _short(p.label)))
    peak = tl.peak_index
    mark_label = (f"peak {_fmt(b.peak_bytes, unit)} at {tl.points[peak].label}")
    notes = (f"each column: tensors at that moment + {_fmt(b.overhead, unit)} runtime overhead "
             f"(the peak's tensors: {_fmt(b.tensor_peak_bytes, unit)})", *tl.notes)
    return Chart(title, tuple(columns), unit, (capacity,) if capacity else (), peak, mark_label, "", notes)


def sweep_chart(title: str, axis_label: str, values: Sequence[int], peaks: Sequence[int], unit: str,
                capacities: Sequence[tuple[str, int]], largest: int | None, largest_label: str) -> Chart:
    """Peak memory against one option's values; `largest` (a value among `values`) is marked."""
    columns = tuple(Column(f"{axis_label} {v:,}", axis_label, {"peak": p}, 1, f"{v:,}")
                    for v, p in zip(values, peaks, strict=True))
    mark = list(values).index(largest) if largest is not None and largest in values else None
    return Chart(title, columns, unit, tuple(capacities), mark, largest_label, axis_label)


# ---- terminal ---------------------------------------------------------------------------------------------

Segment = tuple[str, str]


def _columns_for(chart: Chart, width: int) -> list[int]:
    """For each character column of the plot, the index of the chart column it shows.

    Columns are spread by weight; when there are more than fit, each character column shows the largest
    of the columns it covers, so the peak is never averaged away.
    """
    slots = [i for i, c in enumerate(chart.columns) for _ in range(c.weight)]
    if not slots:
        return []
    if len(slots) <= width:  # stretch to the full width
        return [slots[x * len(slots) // width] for x in range(width)]
    out = []
    for x in range(width):
        chunk = slots[x * len(slots) // width:(x + 1) * len(slots) // width] or [slots[-1]]
        out.append(max(dict.fromkeys(chunk), key=lambda i: (chart.columns[i].total_bytes, -i)))
    return out


def terminal_lines(chart: Chart, width: int, colour: bool, height: int = 16) -> list[list[Segment]]:
    """The chart as lines of (text, style) segments, at most `width` characters each."""
    unit = chart.unit
    top = chart.top_bytes()
    cap_rows = {min(height - 1, cap * height // top): (label, cap) for label, cap in chart.capacities}
    labels = {height - 1: f"{top / UNIT_BYTES[unit]:,.1f}", 0: "0"}
    for row, (_, cap) in cap_rows.items():
        labels[row] = f"{cap / UNIT_BYTES[unit]:,.1f}"
    lw = max(len(s) for s in labels.values())
    plot_width = max(8, width - lw - 2)
    cols = _columns_for(chart, plot_width)
    used = len(cols)
    full, cap_char, edge = ("█", "━", "│") if colour else ("", "=", "|")
    lines: list[list[Segment]] = [[(t, "bold" if colour else "")] for t in textwrap.wrap(chart.title, width)]
    # The marker line: `v peak ...` over the marked column.
    if chart.mark is not None and chart.mark in cols:
        x = cols.index(chart.mark)
        run = cols.count(chart.mark)
        x += (run - 1) // 2
        text = chart.mark_label
        arrow = "▼" if colour else "v"
        room_right = width - (lw + 2 + x) - 2
        if len(text) <= room_right:
            marker = [" " * (lw + 2 + x) + arrow + " " + text]
        elif len(text) <= lw + 2 + x - 1:
            marker = [" " * (lw + 2 + x - len(text) - 1) + text + " " + arrow]
        else:  # no room beside the arrow: the label on its own line(s) above it
            marker = [*textwrap.wrap(text, width), " " * (lw + 2 + x) + arrow]
        lines += [[(line, "bold" if colour else "")] for line in marker]
    names = chart.components()
    for row in range(height - 1, -1, -1):
        label = labels.get(row, "")
        segs: list[Segment] = [(label.rjust(lw) + " " + ("┤" if colour and label else edge if not label
                                                        else "+"), "")]
        cap_here = cap_rows.get(row)
        for i in cols:
            parts = chart.columns[i].parts
            # the cell's middle, 2*(row + 1/2)*top/height, against the stack's cumulative edges (integers)
            mid = (2 * row + 1) * top
            comp = None
            edge_sum = 0
            for name in names:
                edge_sum += parts.get(name, 0)
                if 2 * edge_sum * height > mid:
                    comp = name
                    break
            if cap_here is not None:
                style = f"bold bright_red on {TERM_COLOURS[comp]}" if colour and comp else "bold bright_red"
                segs.append((cap_char, style if colour else ""))
            elif comp is None:
                segs.append((" ", ""))
            elif colour:
                segs.append((full, TERM_COLOURS[comp]))
            else:
                segs.append((PLOT_LETTERS[comp], ""))
        if cap_here is not None:
            tail = f" {cap_here[0]}"
            if lw + 2 + used + len(tail) <= width:
                segs.append((tail, "bright_red" if colour else ""))
        lines.append(_merge(segs))
    lines.append([(" " * lw + " " + ("└" if colour else "+") + ("─" if colour else "-") * used, "")])
    lines.append([(" " * (lw + 2) + _group_row(chart, cols, width - lw - 2 - used), "dim" if colour else "")])
    lines += _legend(chart, names, colour, width)
    for note in chart.notes:
        lines += [[(part, "dim" if colour else "")] for part in textwrap.wrap(f"note: {note}", width)]
    return lines


def _group_row(chart: Chart, cols: list[int], spill: int = 0) -> str:
    """Group names (phases, or the sweep's values) under their spans, cut to fit."""
    if not cols:
        return ""
    if chart.x_title:  # a sweep: each column's own value where it fits, left to right
        row = [" "] * len(cols)
        x = 0
        while x < len(cols):
            i = cols[x]
            text = chart.columns[i].short
            span = cols.count(i)
            if x + len(text) <= len(row) and all(c == " " for c in row[max(0, x - 1):x + len(text)]):
                row[x:x + len(text)] = text
            x += span
        return "".join(row).rstrip()
    spans: list[tuple[str, int, int]] = []
    for x, i in enumerate(cols):
        g = chart.columns[i].group
        if spans and spans[-1][0] == g:
            spans[-1] = (g, spans[-1][1], x)
        else:
            spans.append((g, x, x))
    row = [" "] * (len(cols) + spill)
    for k, (g, a, b) in enumerate(spans):
        if k == len(spans) - 1:  # the last (the optimizer step): moved left or past the axis to fit whole
            a = max(0, min(a, len(row) - len(g)))
            while a < b and row[a - 1] != " ":
                a += 1
            text = g[: len(row) - a]
        else:
            text = g[: max(1, b - a + 1)]
        row[a:a + len(text)] = text
    return "".join(row).rstrip()


def _legend(chart: Chart, names: list[str], colour: bool, width: int) -> list[list[Segment]]:
    items: list[list[Segment]] = []
    for n in names:
        mark = ("█", TERM_COLOURS[n]) if colour else (PLOT_LETTERS[n], "")
        items.append([mark, (" " + NAMES.get(n, n), "")])
    for label, cap in chart.capacities:
        items.append([("━" if colour else "=", "bold bright_red" if colour else ""),
                      (f" {label} {_fmt(cap, chart.unit)}", "")])
    return pack_items(items, width)


def _merge(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for text, style in segs:
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + text, style)
        else:
            out.append((text, style))
    return out


def terminal_text(chart: Chart, width: int) -> str:
    """Plain text of the chart (no colour): what a log file or a pipe gets."""
    return "\n".join("".join(t for t, _ in line).rstrip() for line in terminal_lines(chart, width, False)) + "\n"


def rich_lines(chart: Chart, width: int, colour: bool) -> list[Text]:
    """The chart as rich Text lines (imports rich: call only when printing to a console)."""
    from rich.text import Text

    return [Text.assemble(*line) for line in terminal_lines(chart, width, colour)]


# ---- Mermaid ----------------------------------------------------------------------------------------------

MERMAID_MAX_BARS = 40


def _q(s: str) -> str:
    return '"' + s.replace('"', "'") + '"'


def mermaid(chart: Chart) -> str:
    """A fenced ```mermaid xychart-beta block: stacked bars drawn as overlapping cumulative bars (xychart
    draws each bar series at the same x, later series in front), the capacities as lines."""
    cols = list(dict.fromkeys(_columns_for(chart, MERMAID_MAX_BARS))) if len(chart.columns) > MERMAID_MAX_BARS \
        else list(range(len(chart.columns)))
    names = chart.components()
    scale = UNIT_BYTES[chart.unit]
    top = chart.top_bytes()

    def num(n: int) -> str:
        return f"{n / scale:.2f}"

    series = []
    for k in range(len(names), 0, -1):  # the full stack first, the bottom component last (in front)
        series.append((names[k - 1], [sum(chart.columns[i].parts.get(n, 0) for n in names[:k]) for i in cols]))
    palette = [HEX_COLOURS[n] for n, _ in series] + [CAPACITY_HEX] * len(chart.capacities)
    title = chart.title + (f" - {chart.mark_label}" if chart.mark_label else "")
    lines = [
        "```mermaid",
        "%%{init: {\"themeVariables\": {\"xyChart\": {\"plotColorPalette\": \"" + ", ".join(palette) + "\"}}}}%%",
        "xychart-beta",
        f"    title {_q(title)}",
        "    x-axis [" + ", ".join(_q(chart.columns[i].short or chart.columns[i].label) for i in cols) + "]",
        f"    y-axis {_q('memory (' + chart.unit + ')')} 0 --> {float(num(top)) * 1.05:.2f}",
    ]
    for _, values in series:
        lines.append("    bar [" + ", ".join(num(v) for v in values) + "]")
    for _, cap in chart.capacities:
        lines.append("    line [" + ", ".join(num(cap) for _ in cols) + "]")
    lines.append("```")
    legend = ", ".join(f"{NAMES.get(n, n).replace('_', ' ')} {HEX_COLOURS[n]}" for n in names)
    caps = "; ".join(f"{label} {_fmt(cap, chart.unit)} (line, {CAPACITY_HEX})" for label, cap in chart.capacities)
    lines.append("")
    lines.append(f"Colours: {legend}" + (f"; {caps}" if caps else "") + ".")
    return "\n".join(lines) + "\n"


# ---- SVG / HTML ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SvgGeometry:
    """Where things are drawn (pixels), so a test can look for them in a screenshot."""

    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    capacity_y: tuple[int, ...]
    mark_x: int | None
    mark_label_box: tuple[int, int, int, int] | None  # left, top, right, bottom


def svg_geometry(chart: Chart, width: int = 960, height: int = 480) -> SvgGeometry:
    left, right, top, bottom = 80, width - 24, 64, height - 84
    total_w = sum(c.weight for c in chart.columns) or 1
    scale_top = chart.top_bytes() * 21 // 20
    cap_y = tuple(bottom - (bottom - top) * cap // scale_top for _, cap in chart.capacities)
    mark_x = None
    box = None
    if chart.mark is not None:
        before = sum(c.weight for c in chart.columns[: chart.mark])
        w = chart.columns[chart.mark].weight
        mark_x = left + (right - left) * (2 * before + w) // (2 * total_w)
        text_w = 8 * len(chart.mark_label)  # 14 px sans-serif: under 8 px per character
        x0 = min(max(left, mark_x - text_w // 2), right - text_w)
        box = (x0, top - 40, x0 + text_w, top - 20)
    return SvgGeometry(width, height, left, right, top, bottom, cap_y, mark_x, box)


def svg(chart: Chart, width: int = 960, height: int = 480) -> str:
    """A standalone SVG document (no scripts, no external resources)."""
    g = svg_geometry(chart, width, height)
    scale_top = chart.top_bytes() * 21 // 20
    total_w = sum(c.weight for c in chart.columns) or 1
    names = chart.components()
    span = g.plot_bottom - g.plot_top
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="14">',
        f"<title>{escape(chart.title)}</title>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{g.plot_left}" y="24" font-size="16" font-weight="bold">{escape(chart.title)}</text>',
    ]
    # y-axis: five ticks
    for k in range(6):
        v = scale_top * k // 5
        y = g.plot_bottom - span * k // 5
        out.append(f'<line x1="{g.plot_left}" y1="{y}" x2="{g.plot_right}" y2="{y}" stroke="#e0e0e0"/>')
        out.append(f'<text x="{g.plot_left - 6}" y="{y + 5}" text-anchor="end" font-size="12">'
                   f"{v / UNIT_BYTES[chart.unit]:,.1f}</text>")
    out.append(f'<text x="16" y="{(g.plot_top + g.plot_bottom) // 2}" font-size="12" '
               f'transform="rotate(-90 16 {(g.plot_top + g.plot_bottom) // 2})" text-anchor="middle">'
               f"memory ({chart.unit})</text>")
    # stacked columns
    acc = 0
    groups: list[tuple[str, int, int]] = []
    for c in chart.columns:
        x0 = g.plot_left + (g.plot_right - g.plot_left) * acc // total_w
        acc += c.weight
        x1 = g.plot_left + (g.plot_right - g.plot_left) * acc // total_w
        base = 0
        for n in names:
            v = c.parts.get(n, 0)
            if not v:
                continue
            y_top = g.plot_bottom - span * (base + v) // scale_top
            y_bot = g.plot_bottom - span * base // scale_top
            out.append(f'<rect x="{x0}" y="{y_top}" width="{max(1, x1 - x0)}" height="{max(0, y_bot - y_top)}" '
                       f'fill="{HEX_COLOURS[n]}"><title>{escape(c.label)}: {escape(NAMES.get(n, n))} '
                       f"{_fmt(v, chart.unit)}</title></rect>")
            base += v
        group = c.short if chart.x_title else c.group
        if groups and groups[-1][0] == group:
            groups[-1] = (group, groups[-1][1], x1)
        else:
            groups.append((group, x0, x1))
    out.append(f'<line x1="{g.plot_left}" y1="{g.plot_bottom}" x2="{g.plot_right}" y2="{g.plot_bottom}" '
               'stroke="#333333"/>')
    for name, x0, x1 in groups:
        if x1 - x0 >= 7 * len(name) or chart.x_title:
            out.append(f'<text x="{(x0 + x1) // 2}" y="{g.plot_bottom + 18}" text-anchor="middle" '
                       f'font-size="12">{escape(name)}</text>')
    if chart.x_title:
        out.append(f'<text x="{(g.plot_left + g.plot_right) // 2}" y="{g.plot_bottom + 36}" '
                   f'text-anchor="middle" font-size="12">{escape(chart.x_title)}</text>')
    # capacity lines, drawn over the columns
    for (label, cap), y in zip(chart.capacities, g.capacity_y, strict=True):
        out.append(f'<line x1="{g.plot_left}" y1="{y}" x2="{g.plot_right}" y2="{y}" stroke="{CAPACITY_HEX}" '
                   'stroke-width="3" stroke-dasharray="12 4"/>')
        # a white box under the label keeps it readable over any component's colour (~0.62 em per character
        # of bold 16 px sans-serif, with 4 px to spare on each side)
        text = f"{label} {_fmt(cap, chart.unit)}"
        box_w = round(len(text) * 16 * 0.62) + 8
        out.append(f'<rect x="{g.plot_right - box_w}" y="{y - 30}" width="{box_w}" height="22" fill="white"/>')
        out.append(f'<text x="{g.plot_right - 4}" y="{y - 13}" text-anchor="end" fill="{CAPACITY_TEXT_HEX}" '
                   f'font-weight="bold">{escape(text)}</text>')
    # the marked column and its label
    if g.mark_x is not None and g.mark_label_box is not None:
        x0, y0, x1, y1 = g.mark_label_box
        out.append(f'<path d="M {g.mark_x - 7} {g.plot_top - 16} L {g.mark_x + 7} {g.plot_top - 16} '
                   f'L {g.mark_x} {g.plot_top - 4} Z" fill="#000000"/>')
        out.append(f'<text x="{x0}" y="{y1 - 4}" font-weight="bold">{escape(chart.mark_label)}</text>')
    # legend
    x = g.plot_left
    y = height - 24
    for n in names:
        out.append(f'<rect x="{x}" y="{y - 11}" width="12" height="12" fill="{HEX_COLOURS[n]}"/>')
        text = NAMES.get(n, n)
        out.append(f'<text x="{x + 16}" y="{y}" font-size="12">{escape(text)}</text>')
        x += 28 + 7 * len(text)
    return "\n".join(out) + "\n</svg>\n"


def html(chart: Chart) -> str:
    """A standalone HTML page holding the SVG and the chart's notes."""
    notes = "".join(f"<p>{escape(n)}</p>\n" for n in chart.notes)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(chart.title)}</title>\n"
            "<style>body{margin:0;font-family:'DejaVu Sans',Arial,sans-serif;font-size:13px}"
            "p{margin:4px 16px;color:#555}</style>\n</head>\n<body>\n"
            f"{svg(chart)}{notes}</body>\n</html>\n")
