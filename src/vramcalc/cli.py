"""The Typer app: parse options, look presets up, call the core, print, choose the exit code.

Exit codes: 0 success; 1 with --check when the run does not fit the GPU; 2 bad input (one line on stderr).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Literal

import typer

from vramcalc import __version__, whatif
from vramcalc.options import OptionValues, with_estimate_options
from vramcalc.output import csv_text, emit, fail

Format = Literal["table", "json", "yaml", "csv", "markdown"]
Units = Literal["GB", "GiB"]
WeightDtype = Literal["auto", "fp32", "bf16", "fp16", "fp8", "int8", "gptq-int4", "awq-int4", "nf4"]

EPILOG = ("Exit codes: 0 success; 1 with --check when the run does not fit the GPU; "
          "2 bad input (a one-line error on stderr).")

app = typer.Typer(
    name="vramcalc",
    help="Will this fine-tune fit on my GPU? Per-component GPU memory of a training step, and a verdict.",
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vramcalc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Will this fine-tune fit on my GPU? Example: vramcalc estimate mistral-7b --method full --gpu rtx4090"""


class BadInput(Exception):
    """Raised inside commands for input problems found by the CLI itself."""


PresetsOption = Annotated[list[str] | None, typer.Option(
    "--presets", help="Extra preset directory (models/*.yaml, gpus.yaml); repeatable; adds to and "
                      "overrides the built-in presets, after VRAMCALC_PRESETS.")]


MODEL_HELP = "Model preset name, alias or Hugging Face id, or a path to a config.json or a model folder."


def _complete_model(incomplete: str) -> list[str]:
    from vramcalc import presets

    return [n for n in presets.models().names() if n.startswith(incomplete.lower())]


def _complete_gpu(incomplete: str) -> list[str]:
    from vramcalc import presets

    return [n for n in presets.gpus().names() if n.startswith(incomplete.lower())]


def _console() -> Any:
    from rich.console import Console

    return Console()


@app.command(epilog=EPILOG)
@with_estimate_options()
def estimate(
    model: Annotated[str | None, typer.Argument(help="Model preset name, alias, Hugging Face id or "
                                                "config.json path (or `model:` in --config).",
                                                autocompletion=_complete_model)] = None,
    *,
    opts: OptionValues,
    gpu: Annotated[str | None, typer.Option(help="GPU preset to check the fit against (no verdict without).",
                                            autocompletion=_complete_gpu)] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = "table",
    units: Annotated[Units, typer.Option(help="GB (10^9, as the seed texts count) or GiB (2^30).")] = "GB",
    check: Annotated[bool, typer.Option(help="Exit 1 when a --gpu is given and the run does not fit.")] = False,
    preset_dirs: PresetsOption = None,
    max_memory: whatif.MaxMemoryOpt = None,
    margin: whatif.MarginOpt = None,
    config: whatif.ConfigOpt = None,
    no_color: whatif.NoColorOpt = False,
    plot: Annotated[bool, typer.Option("--plot", help="Also draw the memory over the step (a chart; "
                                       "Mermaid with --format markdown).")] = False,
) -> None:
    """Estimate the GPU memory of one training step, per component, with a fit verdict.

    Example: vramcalc estimate mistral-7b --method full --gpu rtx4090
    """
    from vramcalc import presets

    try:
        presets.use_dirs(preset_dirs or ())
        m = whatif.margin_of(margin)
        rows = whatif.estimate_rows(model, gpu, max_memory, config, opts, m)
    except whatif._errors() as e:
        raise fail(e) from None
    if plot:
        from vramcalc.commands_plot import check_format
        check_format(fmt, plot)
    whatif.print_estimate(rows, m, fmt, units, no_color)
    if plot:  # issue 17
        from vramcalc.commands_plot import print_step_plots
        print_step_plots(rows, fmt, units, no_color)
    whatif.estimate_exit(rows, check)


@app.command()
def models(
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = "table",
    preset_dirs: PresetsOption = None,
) -> None:
    """List the model presets with their parameter counts. Example: vramcalc models --format json"""
    from vramcalc import presets
    from vramcalc.errors import VramcalcError
    from vramcalc.params import count_params
    from vramcalc.specs import ModelSpec

    try:
        specs = [s for s in presets.models(preset_dirs or ()).specs if isinstance(s, ModelSpec)]
    except VramcalcError as e:
        raise fail(e) from None
    rows: list[dict[str, Any]] = [{"name": s.name, "display_name": s.display_name or s.name, "family": s.family,
             "parameters": count_params(s), "aliases": list(s.aliases), "source": s.source} for s in specs]
    rows.sort(key=lambda r: (r["family"], r["parameters"]))
    if fmt in ("json", "yaml"):
        emit({"models": rows}, fmt)
        return
    if fmt == "csv":
        columns = ["name", "display_name", "family", "parameters", "source"]
        typer.echo(csv_text(columns, rows), nl=False)
        return
    if fmt == "markdown":
        lines = ["| name | family | parameters |", "| --- | --- | ---: |"]
        lines += [f"| {r['name']} | {r['family']} | {r['parameters']:,} |" for r in rows]
        typer.echo("\n".join(lines))
        return
    from rich.table import Table

    tbl = Table("name", "family", "parameters", "Hugging Face id", show_edge=False)
    for r in rows:
        hf = next((a for a in r["aliases"] if "/" in a), "")
        tbl.add_row(r["name"], r["family"], f"{r['parameters']:,}", hf)
    _console().print(tbl)


@app.command()
@with_estimate_options()
def gpus(
    *,
    opts: OptionValues,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = "table",
    preset_dirs: PresetsOption = None,
    fits: Annotated[str | None, typer.Option(help="List only the GPUs that fit this model's run (the "
                                             "estimate options describe it), smallest first, with headroom.",
                                             autocompletion=_complete_model)] = None,
    margin: whatif.MarginOpt = None,
    config: whatif.ConfigOpt = None,
    units: Annotated[Units, typer.Option(help="GB (10^9) or GiB (2^30).")] = "GB",
    check: Annotated[bool, typer.Option(help="With --fits: exit 1 when no GPU fits.")] = False,
) -> None:
    """List the GPU presets with their memory, or those that fit a run.

    Example: vramcalc gpus --fits mistral-7b --method qlora --seq-len 2048
    """
    if fits is not None:
        whatif.gpus_fit(fits, opts, margin, config, fmt, units, check)
        return
    from vramcalc import presets, render
    from vramcalc.errors import VramcalcError
    from vramcalc.specs import GpuSpec

    try:
        specs = [s for s in presets.gpus(preset_dirs or ()).specs if isinstance(s, GpuSpec)]
    except VramcalcError as e:
        raise fail(e) from None
    specs.sort(key=lambda g: (g.vendor, g.memory_bytes, g.name))
    rows = [{"name": g.name, "display_name": g.display_name, "memory_bytes": g.memory_bytes, "bf16": g.bf16,
             "fp8": g.fp8, "vendor": g.vendor, "source": g.source} for g in specs]
    if fmt in ("json", "yaml"):
        emit({"gpus": rows}, fmt)
        return
    if fmt == "csv":
        typer.echo(csv_text(list(rows[0]) if rows else ["name"], rows), nl=False)
        return
    if fmt == "markdown":
        lines = ["| name | GPU | memory | bf16 |", "| --- | --- | ---: | --- |"]
        lines += [f"| {g.name} | {g.display_name} | {render.gpu_capacity(g)} | {'yes' if g.bf16 else 'no'} |"
                  for g in specs]
        typer.echo("\n".join(lines))
        return
    from rich.table import Table

    tbl = Table("name", "GPU", "memory", "bf16", show_edge=False)
    for g in specs:
        tbl.add_row(g.name, g.display_name, render.gpu_capacity(g), "yes" if g.bf16 else "no")
    _console().print(tbl)


@app.command()
def show(
    model: Annotated[str, typer.Argument(help=MODEL_HELP, autocompletion=_complete_model)],
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = "table",
    preset_dirs: PresetsOption = None,
) -> None:
    """Show a model's architecture and its parameter count broken down. Example: vramcalc show mistral-7b"""
    from vramcalc.errors import VramcalcError
    from vramcalc.model_files import resolve_model
    from vramcalc.params import active_params, count_params, params_by_name

    try:
        spec, model_notes = resolve_model(model, preset_dirs or ())
    except VramcalcError as e:
        raise fail(e) from None
    breakdown = params_by_name(spec)
    total = count_params(spec)
    doc = {"model": spec.name, "architecture": spec.model_dump(exclude_defaults=False),
           "parameters": total, "active_parameters": active_params(spec), "breakdown": breakdown,
           "notes": list(model_notes)}
    if fmt in ("json", "yaml"):
        emit(doc, fmt)
        return
    if fmt == "csv":
        groups = [{"tensor_group": k, "parameters": v} for k, v in breakdown.items()]
        typer.echo(csv_text(["tensor_group", "parameters"], groups), nl=False)
        return
    from rich.table import Table

    tbl = Table("tensor group", "parameters", "share", title=f"{spec.display_name or spec.name}: "
                f"{total:,} parameters", title_justify="left", show_edge=False)
    for name, n in breakdown.items():
        tbl.add_row(name, f"{n:,}", f"{100 * n / total:.1f} %")
    if fmt == "markdown":
        lines = [f"### {spec.name}: {total:,} parameters", "", "| tensor group | parameters |", "| --- | ---: |"]
        lines += [f"| {k} | {v:,} |" for k, v in breakdown.items()]
        typer.echo("\n".join(lines))
        return
    _console().print(tbl)
    if doc["active_parameters"] != doc["parameters"]:
        typer.echo(f"active parameters per token: {doc['active_parameters']:,} (mixture of experts: "
                   f"{spec.experts_per_token} of {spec.num_experts} routed experts)")
    for note in model_notes:
        typer.echo(f"note: {note}")
    arch = {k: v for k, v in spec.model_dump().items() if v not in (None, (), False, 0) and k != "aliases"}
    _console().print(", ".join(f"{k}={v}" for k, v in arch.items()), highlight=False, soft_wrap=True)


from vramcalc.commands_explain import explain  # noqa: E402 - commands defined in their own modules
from vramcalc.commands_presets import presets_app  # noqa: E402

app.command("explain", epilog=EPILOG)(explain)
app.add_typer(presets_app, name="presets")
from vramcalc.commands_storage import storage as _storage  # noqa: E402  (vramcalc storage, issue #6)

app.command(epilog=EPILOG)(_storage)
app.command("compare", epilog=EPILOG)(whatif.compare)
app.command("fit", epilog=EPILOG)(whatif.fit_command)


def main() -> None:
    """Console entry point: Click's usage errors become one line on stderr with exit code 2."""
    try:  # recent typer vendors click as typer._click; older releases use click itself
        from typer._click.exceptions import UsageError
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click.exceptions import UsageError  # type: ignore[assignment]

    try:
        code = app(standalone_mode=False)
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # `vramcalc` alone: the help was printed
            sys.exit(0)
        hint = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
        message = " ".join(e.format_message().replace("Value error, ", "").split())
        typer.echo(f"error: {message}{hint}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


from vramcalc.commands_plot import timeline_command  # noqa: E402  (plot.py is imported only when it draws)
from vramcalc.commands_trace import trace_command  # noqa: E402  (torch is imported only when it runs)

app.command("trace", epilog=EPILOG)(trace_command)
app.command("timeline", epilog=EPILOG)(timeline_command)
