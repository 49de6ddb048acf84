"""The stacked bar: each component's bytes against the GPU's capacity line, for a terminal.

In colour each component is a coloured block; in plain output (not a TTY, --no-color, NO_COLOR) each is
a letter, so the bar still reads in a log file: W weights, G gradients, O optimizer state,
A activations, T temporaries, + overhead; `|` marks a GPU's capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vramcalc.core.memory import Breakdown
from vramcalc.core.units import UNIT_BYTES

if TYPE_CHECKING:
    from rich.text import Text

Segment = tuple[str, str]  # (text, rich style); plain output ignores the style

LETTERS = {
    "weights": "W",
    "gradients": "G",
    "optimizer_state": "O",
    "activations": "A",
    "kv_cache": "K",
    "communication": "C",
    "temporaries": "T",
    "overhead": "+",
}
COLOURS = {
    "weights": "blue",
    "gradients": "magenta",
    "optimizer_state": "yellow",
    "activations": "green",
    "kv_cache": "bright_green",
    "communication": "red",
    "temporaries": "cyan",
    "overhead": "bright_black",
}


def bar_segments(b: Breakdown, capacities: Sequence[int], scale_bytes: int, width: int,
                 colour: bool) -> list[Segment]:
    """`[WWWWWGAAAA+   |   ]`: as long as the peak (what the verdict compares), split among the components in
    proportion to their sizes (they add up to more than the peak: not all are live at once), `|` at each
    capacity, `width` cells for `scale_bytes`."""
    cells: list[str] = []
    edge = 0
    total = b.sum_bytes
    for c in b.shown_components():
        edge += b.component(c)
        drawn = edge * b.peak_bytes // total if total else 0
        stop = min(width, round(drawn * width / scale_bytes)) if scale_bytes else 0
        cells += [c] * max(0, stop - len(cells))
    cells += [""] * (width - len(cells))
    marks = {
        min(width - 1, max(0, round(cap * width / scale_bytes) - 1)) for cap in capacities if scale_bytes
    }
    out: list[Segment] = [("[", "")]
    for i, component in enumerate(cells):
        if i in marks:
            out.append(("|", "bold red" if component else "bold"))
        elif not component:
            out.append((" ", ""))
        elif colour:
            out.append(("█", COLOURS[component]))
        else:
            out.append((LETTERS[component], ""))
    out.append(("]", ""))
    return out


def bar(b: Breakdown, capacities: Sequence[int], scale_bytes: int, width: int, colour: bool) -> Text:
    """The bar as a rich Text, for table cells (compare)."""
    from rich.text import Text

    return Text.assemble(*bar_segments(b, capacities, scale_bytes, width, colour))


def pack_items(items: Sequence[list[Segment]], line_width: int) -> list[list[Segment]]:
    """Legend items packed into lines of `line_width` columns, ` · ` between items on a line."""
    lines: list[list[Segment]] = [[]]
    used = 0
    for item in items:
        size = sum(len(text) for text, _ in item)
        if used and used + 3 + size > line_width:
            lines.append([])
            used = 0
        if used:
            lines[-1].append((" · ", ""))
            used += 3
        lines[-1] += item
        used += size
    return lines


def legend_lines(b: Breakdown, unit: str, colour: bool, line_width: int) -> list[list[Segment]]:
    """`W weights 4.15 · G gradients 0.03 · ...` (sizes in `unit`), packed into lines of `line_width`."""
    return pack_items([[("█" if colour else LETTERS[c], COLOURS[c] if colour else ""),
                        (f" {c.replace('_', ' ')} {b.component(c) / UNIT_BYTES[unit]:,.2f}", "")]
                       for c in b.shown_components()], line_width)


def figure_lines(b: Breakdown, capacity: int | None, label: str | None, unit: str, colour: bool,
                 line_width: int, width: int = 50) -> list[list[Segment]]:
    """The bar with its legend and what the capacity line is, for `estimate` (lines of segments)."""
    scale = max(b.peak_bytes, capacity or 0)
    bar_line = bar_segments(b, [capacity] if capacity else [], scale, width, colour)
    if capacity:
        bar_line.append((f"  | = {label} {capacity / UNIT_BYTES[unit]:,.2f} {unit}", ""))
    return [[(f"memory (the peak, split among the components in proportion; {unit}):", "dim")], bar_line,
            *legend_lines(b, unit, colour, line_width)]
