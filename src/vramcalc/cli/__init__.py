"""The command line: Typer and rich live here and nowhere else."""

from __future__ import annotations


def main() -> None:
    """Console entry point."""
    from vramcalc.cli.app import main as typer_main

    typer_main()
