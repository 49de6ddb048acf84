"""The cold-start baseline: the smallest honest Typer + rich + pydantic script that prints one table.

    python benchmarks/naive_cli.py estimate mistral-7b --method full --gpu rtx4090

It parses the same kind of command line, validates one pydantic model and prints a rich table of
six rows: what any Typer + rich + pydantic CLI pays before it does any work of its own.
"""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict, PositiveInt
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False)


class Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    component: str
    memory_bytes: PositiveInt


@app.callback()
def _root() -> None:
    """Naive baseline."""


@app.command()
def estimate(
    model: Annotated[str, typer.Argument(help="Model name.")],
    method: Annotated[str, typer.Option(help="Fine-tuning method.")] = "full",
    gpu: Annotated[str, typer.Option(help="GPU name.")] = "rtx4090",
) -> None:
    """Print one table."""
    rows = [
        Row(component=c, memory_bytes=(i + 1) * 10**9)
        for i, c in enumerate(
            ["weights", "gradients", "optimizer state", "activations", "temporaries", "overhead"]
        )
    ]
    table = Table(title=f"{model} · {method} · {gpu}")
    table.add_column("component")
    table.add_column("memory (GB)", justify="right")
    for r in rows:
        table.add_row(r.component, f"{r.memory_bytes / 10**9:.2f} GB")
    Console().print(table)


if __name__ == "__main__":
    app()
