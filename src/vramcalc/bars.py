"""The stacked bar: each component's bytes against the GPU's capacity line, for a terminal.

In colour each component is a coloured block; in plain output (not a TTY, --no-color, NO_COLOR) each is
a letter, so the bar still reads in a log file: W weights, G gradients, O optimizer state,
A activations, T temporaries, + overhead; `|` marks a GPU's capacity.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from vramcalc.memory import Breakdown
from vramcalc.units import UNIT_BYTES

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


def bar(b: Breakdown, capacities: Sequence[int], scale_bytes: int, width: int, colour: bool) -> Text:
    """`[WWWWWGAAAA+   |   ]`: components added up, `|` at each capacity, `width` cells for `scale_bytes`."""
    cells: list[tuple[str, str]] = []
    edge = 0
    for c in b.shown_components():
        edge += b.component(c)
        stop = min(width, round(edge * width / scale_bytes)) if scale_bytes else 0
        cells += [(c, "")] * max(0, stop - len(cells))
    cells += [("", "")] * (width - len(cells))
    marks = {
        min(width - 1, max(0, round(cap * width / scale_bytes) - 1)) for cap in capacities if scale_bytes
    }
    text = Text("[")
    for i, (component, _) in enumerate(cells):
        if i in marks:
            text.append("|", style="bold red" if component else "bold")
        elif not component:
            text.append(" ")
        elif colour:
            text.append("█", style=COLOURS[component])
        else:
            text.append(LETTERS[component])
    text.append("]")
    return text


def legend(b: Breakdown, unit: str, colour: bool) -> Text:
    """`W weights 4.15 · G gradients 0.03 · ...` (sizes in `unit`)."""
    text = Text()
    for i, c in enumerate(b.shown_components()):
        if i:
            text.append(" · ")
        text.append("█" if colour else LETTERS[c], style=COLOURS[c] if colour else "")
        text.append(f" {c.replace('_', ' ')} {b.component(c) / UNIT_BYTES[unit]:,.2f}")
    return text


def figure(
    b: Breakdown, capacity: int | None, label: str | None, unit: str, colour: bool, width: int = 50
) -> Text:
    """The bar with its legend and what the capacity line is, for `estimate`."""
    scale = max(b.sum_bytes, capacity or 0)
    out = Text(f"memory (components added up; {unit}):\n", style="dim")
    out.append_text(bar(b, [capacity] if capacity else [], scale, width, colour))
    if capacity:
        out.append(f"  | = {label} {capacity / UNIT_BYTES[unit]:,.2f} {unit}")
    out.append("\n")
    out.append_text(legend(b, unit, colour))
    return out
