"""`vramcalc presets validate DIR` and `vramcalc presets new --from config.json`: user presets (io/preset_check.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

presets_app = typer.Typer(
    help="Check user preset directories and write new presets from a Hugging Face config.json. "
    "Example: vramcalc presets validate my-presets",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@presets_app.command("validate")
def validate(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Preset directory (models/*.yaml, gpus.yaml or gpus/*.yaml), or one preset file."
        ),
    ],
) -> None:
    """Check user presets and report every problem as FILE:LINE: message.

    Exit 0 when every entry is valid, 1 when problems are found, 2 when DIRECTORY does not exist.
    Example: vramcalc presets validate ./my-presets
    """
    from vramcalc.io.preset_check import check_dir, check_file

    if directory.is_file():
        kind = "gpu" if directory.name.startswith("gpus") or directory.parent.name == "gpus" else "model"
        problems, specs = check_file(directory, kind)
        counts = {
            "model": len(specs) if kind == "model" else 0,
            "gpu": len(specs) if kind == "gpu" else 0,
            "file": 1,
        }
        notices: list[str] = []
    elif directory.is_dir():
        problems, counts, notices = check_dir(directory)
        if counts["file"] == 0:
            typer.echo(
                f"error: {directory}: no preset files found; put models in {directory}/models/*.yaml "
                f"and GPUs in {directory}/gpus.yaml",
                err=True,
            )
            raise typer.Exit(code=2)
    else:
        typer.echo(f"error: {directory}: no such file or directory; pass a preset directory", err=True)
        raise typer.Exit(code=2)
    for n in notices:
        typer.echo(f"note: {n}")
    for problem in problems:
        typer.echo(str(problem))
    summary = f"{counts['model']} models, {counts['gpu']} GPUs valid in {counts['file']} files"
    if problems:
        typer.echo(
            f"error: {len(problems)} problems in {directory} ({summary}); fix them and run again", err=True
        )
        raise typer.Exit(code=1)
    typer.echo(f"ok: {directory}: {summary}")


@presets_app.command("new")
def new(
    from_path: Annotated[Path, typer.Option("--from", help="A config.json, or a model folder holding one.")],
    name: Annotated[str | None, typer.Option(help="Preset name (default: the folder or file name).")] = None,
    source: Annotated[
        str | None, typer.Option(help="Where the config comes from, e.g. its Hugging Face URL.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --output if it exists.")] = False,
) -> None:
    """Write a model preset (YAML) from a Hugging Face config.json.

    Put the file in DIR/models/ and use it with --presets DIR or VRAMCALC_PRESETS=DIR.
    Example: vramcalc presets new --from ./Mistral-7B-v0.1/config.json -o my-presets/models/mistral.yaml
    """
    from vramcalc.core.errors import VramcalcError
    from vramcalc.io.model_files import load_model_path
    from vramcalc.io.preset_check import entry_yaml, preset_entry

    try:
        loaded = load_model_path(from_path)
        if output is not None and output.exists() and not force:
            raise VramcalcError(f"{output} exists; pass --force to overwrite it or choose another --output")
        entry = preset_entry(loaded, name.strip().lower().replace(" ", "-") if name else None, source)
        text = entry_yaml(entry, f"# Written by `vramcalc presets new --from {from_path}`.\n")
    except VramcalcError as e:
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        raise typer.Exit(code=2) from None
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as e:
        typer.echo(f"error: {output}: cannot write: {e.strerror or e}; choose another --output", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(
        f"wrote {output}: model {entry['name']!r}; use it with --presets {output.parent.parent}", err=True
    )
