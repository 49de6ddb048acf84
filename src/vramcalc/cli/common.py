"""What every command shares: the output options, the model/GPU arguments with completion, the epilog.

Declared once here; each command module imports what it takes.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vramcalc.core.errors import BadInput

__all__ = ["BadInput"]  # re-exported for the commands
from vramcalc.core.vocab import ExplainFormat, OutFormat, PlotAxis, Unit

EPILOG = ("Exit codes: 0 success; 1 with --check when the run does not fit the GPU; "
          "2 bad input (a one-line error on stderr).")
MODEL_HELP = "Model preset name, alias or Hugging Face id, or a path to a config.json or a model folder."


def complete_model(incomplete: str) -> list[str]:
    from vramcalc.io import presets

    return [n for n in presets.models().names() if n.startswith(incomplete.lower())]


def complete_gpu(incomplete: str) -> list[str]:
    from vramcalc.io import presets

    return [n for n in presets.gpus().names() if n.startswith(incomplete.lower())]


FormatOpt = Annotated[OutFormat, typer.Option("--format", help="Output format (markdown for pull-request comments).")]
ExplainFormatOpt = Annotated[ExplainFormat, typer.Option(
    "--format", help="text (default), markdown, json, yaml or csv (one row per term).")]
UnitsOpt = Annotated[Unit, typer.Option(help="GB (10^9, as the seed texts count) or GiB (2^30).")]
PresetsOpt = Annotated[list[str] | None, typer.Option(
    "--presets", help="Extra preset directory (models/*.yaml, gpus.yaml); repeatable; adds to and "
                      "overrides the built-in presets, after VRAMCALC_PRESETS.")]
ModelArg = Annotated[str, typer.Argument(help=MODEL_HELP, autocompletion=complete_model)]
GpuOpt = Annotated[str | None, typer.Option(help="GPU preset to check the fit against (no verdict without).",
                                            autocompletion=complete_gpu)]
MarginOpt = Annotated[
    str | None,
    typer.Option(help="Headroom below which a fit is TIGHT: 5% or 0.05 of the estimated peak "
                      "(default 7%: the measured error band)."),
]
MaxMemoryOpt = Annotated[
    str | None,
    typer.Option(help="Gate on a memory budget instead of a GPU: 20GB (10^9), 24GiB (2^30) or bytes."),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        help="Run file (YAML/JSON of option keys, one run or a list) or an axolotl, LLaMA-Factory, HF "
        "TrainingArguments, torchtune, DeepSpeed or accelerate config. Command-line options override it."
    ),
]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help="Plain output without colour (also NO_COLOR).")]
CheckOpt = Annotated[bool, typer.Option(help="Exit 1 when the asked configuration does not fit.")]


def use_presets(dirs: list[str] | None) -> None:
    """Apply --presets for this invocation (every command takes it)."""
    from vramcalc.io import presets

    presets.use_dirs(dirs or ())


def rich_console() -> Any:
    from rich.console import Console

    return Console()
PlotAxisOpt = Annotated[PlotAxis | None, typer.Option(
    "--plot", help="Draw the peak against this option, with the GPU line and the largest value that fits.")]
# compare draws the option it varies; the name says which one
CompareAxisOpt = Annotated[PlotAxis | None, typer.Option(
    "--plot", help="Draw the peak against this varied option (the only one varied), with a line per GPU.")]


def training_spec(values: Any) -> Any:
    """core/options.py training_spec with --reward-model resolved to its ModelSpec (a preset or config.json, as
    MODEL is): the core reads no files."""
    from vramcalc.core.options import training_spec as _training_spec

    name = values.get("reward_model", "none") if hasattr(values, "get") else "none"
    if not name or name == "none":
        return _training_spec(values)
    from vramcalc.io.resolve import resolve_model

    return _training_spec(values, resolve_model(str(name))[0])
