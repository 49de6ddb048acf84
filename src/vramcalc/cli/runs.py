"""What the run commands share: margins, GPU targets, comma lists, and one run as a flat CSV row.

Light: no Typer or rich here (the estimate fast path imports it).
"""

from __future__ import annotations

from typing import Any

from vramcalc.core.memory import COMPONENTS
from vramcalc.core.options import OPTIONS


def stack_defaults(name: str) -> Any:
    """A stack preset's option defaults (io/stacks.py), read only when a stack other than hf is asked for."""
    from vramcalc.io.stacks import stack_options

    return stack_options(name)


def margin_of(text: str | None) -> Any:
    from vramcalc.core.margin import Margin, parse_margin

    return Margin() if text is None else parse_margin(text)


def targets(gpu_names: list[str], max_memory: str | None) -> list[Any]:
    """GpuSpecs to check against: presets by name, or one `budget` standing for --max-memory."""
    from vramcalc.core.margin import parse_size
    from vramcalc.core.specs import GpuSpec
    from vramcalc.io import presets

    out = [presets.find_gpu(g) for g in gpu_names]
    if max_memory is not None:
        out.append(
            GpuSpec(
                name="budget",
                display_name=f"budget {max_memory.strip()}",
                source="--max-memory",
                memory_bytes=parse_size(max_memory),
            )
        )
    return out


def split(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


CSV_COMPONENTS = COMPONENTS  # one CSV column per component, in the core's order


def flat_row(
    b: Any, training: Any, gpu: Any, status: str | None, headroom: int | None, name: str | None = None,
    family: str = "",
) -> dict[str, Any]:
    from vramcalc.cli import render

    row: dict[str, Any] = {"name": name, "model": b.model}
    settings = render.settings(training, family)
    row.update({o.name: settings.get(o.name) for o in OPTIONS})
    row.update({c: b.component(c) for c in CSV_COMPONENTS})
    row.update(
        peak_bytes=b.peak_bytes,
        tensor_peak_bytes=b.tensor_peak_bytes,
        peak_phase=b.peak_phase,
        gpu=None if gpu is None else gpu.name,
        gpu_memory_bytes=None if gpu is None else gpu.memory_bytes,
        status=status,
        headroom_bytes=headroom,
    )
    return row


CSV_COLUMNS = (
    "name",
    "model",
    *(o.name for o in OPTIONS),
    *CSV_COMPONENTS,
    "peak_bytes",
    "tensor_peak_bytes",
    "peak_phase",
    "gpu",
    "gpu_memory_bytes",
    "status",
    "headroom_bytes",
)



STATUS_STYLE = {"FITS": "bold green", "TIGHT": "bold yellow", "DOES NOT FIT": "bold red", None: ""}
