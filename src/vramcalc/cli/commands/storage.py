"""`vramcalc storage`: N fine-tuned copies vs one base + N adapters."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vramcalc.cli.common import FormatOpt, ModelArg, PresetsOpt, UnitsOpt, use_presets
from vramcalc.core.options import BY_NAME
from vramcalc.core.vocab import AdapterDtype, WeightDtype


def storage(
    model: ModelArg,
    adapters: Annotated[int, typer.Option(help="Number of tasks: fine-tuned copies, or LoRA adapters.")] = 10,
    lora_rank: Annotated[int, typer.Option(help=BY_NAME["lora_rank"].help)] = BY_NAME["lora_rank"].default,
    lora_targets: Annotated[str, typer.Option(help=BY_NAME["lora_targets"].help)] = BY_NAME["lora_targets"].default,
    adapter_dtype: Annotated[AdapterDtype, typer.Option(help="Adapter dtype as saved.")] = "fp32",
    weight_dtype: Annotated[WeightDtype, typer.Option(help="Format of copies and base (auto: bf16).")] = "auto",
    fmt: FormatOpt = "table",
    units: UnitsOpt = "GB",
    preset_dirs: PresetsOpt = None,
) -> None:
    """Compare N fully fine-tuned copies with one base model + N LoRA adapters (disk, and GPU memory
    when served together as multi-LoRA).

    Example: vramcalc storage mistral-7b --adapters 10
    """
    from vramcalc.cli.render import format_bytes
    from vramcalc.core.errors import BadInput
    from vramcalc.core.specs import TrainingSpec
    from vramcalc.core.storage import break_even_adapters, compare_storage
    from vramcalc.io.resolve import resolve_model

    use_presets(preset_dirs)
    if adapters < 1:
        raise BadInput(f"--adapters must be at least 1, not {adapters}")
    spec, _ = resolve_model(model)
    training = TrainingSpec(mode="inference", method="lora", lora_rank=lora_rank,
                            adapter_dtype=adapter_dtype,
                            lora_targets=tuple(x.strip() for x in lora_targets.split(",") if x.strip()),
                            weight_dtype=weight_dtype)
    c = compare_storage(spec, training, adapters)
    doc: dict[str, Any] = {
        "model": c.model, "adapters": c.adapters, "parameters": c.parameters,
        "adapter_parameters": c.adapter_parameters, "model_bytes": c.model_bytes,
        "adapter_bytes": c.adapter_bytes,
        "full_copies_bytes": c.full_copies_bytes, "base_plus_adapters_bytes": c.base_plus_adapters_bytes,
        "saved_bytes": c.saved_bytes, "break_even_adapters": break_even_adapters(c), "units": units,
    }
    rows = [("one full copy", c.model_bytes),
            (f"one adapter (r={lora_rank}, {c.adapter_parameters:,} params)", c.adapter_bytes),
            (f"{c.adapters} fine-tuned copies", c.full_copies_bytes),
            (f"base + {c.adapters} adapters", c.base_plus_adapters_bytes),
            ("saved", c.saved_bytes)]
    if fmt in ("json", "yaml"):
        from vramcalc.cli.output import emit

        emit(doc, fmt)
        return
    if fmt == "csv":
        from vramcalc.cli.output import csv_text

        typer.echo(csv_text(["deployment", "bytes"], [{"deployment": k, "bytes": v} for k, v in rows]), nl=False)
        return
    if fmt == "markdown":
        lines = [f"### {spec.display_name or spec.name}: {c.adapters} tasks", "",
                 f"| deployment | size ({units}) |", "| --- | ---: |"]
        lines += [f"| {k} | {format_bytes(v, units)} |" for k, v in rows]
        lines += ["", f"{break_even_adapters(c):,} adapters weigh as much as one full copy."]
        typer.echo("\n".join(lines))
        return
    from rich.console import Console
    from rich.table import Table

    tbl = Table(title=f"{spec.display_name or spec.name}: {c.adapters} tasks", title_justify="left",
                show_edge=False)
    tbl.add_column("deployment")
    tbl.add_column(f"size ({units})", justify="right")
    tbl.add_row("one full copy", format_bytes(c.model_bytes, units))
    tbl.add_row(f"one adapter (r={lora_rank}, {c.adapter_parameters:,} params)",
                format_bytes(c.adapter_bytes, units))
    tbl.add_section()
    tbl.add_row(f"{c.adapters} fine-tuned copies", format_bytes(c.full_copies_bytes, units))
    tbl.add_row(f"base + {c.adapters} adapters", format_bytes(c.base_plus_adapters_bytes, units))
    tbl.add_row("saved", f"{format_bytes(c.saved_bytes, units)} ({c.ratio:,.1f}× smaller)")
    console = Console()
    console.print(tbl)
    console.print(f"{break_even_adapters(c):,} adapters weigh as much as one full copy.", highlight=False)
