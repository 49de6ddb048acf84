"""The Typer app: parse options, look presets up, call the core, print, choose the exit code.

Exit codes: 0 success; 1 with --check when the run does not fit the GPU; 2 bad input (one line on stderr).
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal

import typer

from vramcalc import __version__

Format = Literal["table", "json", "yaml", "markdown"]
Units = Literal["GB", "GiB"]

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


def _one_line(e: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]).replace("_", "-")
        msg = err["msg"].removeprefix("Value error, ")
        return f"--{field}: {msg}" if field else msg
    return " ".join(str(e).split())


def _fail(e: BaseException) -> typer.Exit:
    typer.echo(f"error: {_one_line(e)}", err=True)
    return typer.Exit(code=2)


def _complete_model(incomplete: str) -> list[str]:
    from vramcalc import presets

    return [n for n in presets.models().names() if n.startswith(incomplete.lower())]


def _complete_gpu(incomplete: str) -> list[str]:
    from vramcalc import presets

    return [n for n in presets.gpus().names() if n.startswith(incomplete.lower())]


def _emit(doc: dict[str, Any], fmt: str) -> None:
    if fmt == "json":  # plain json.dumps: byte-exact, width-independent, no colour codes
        typer.echo(json.dumps(doc, indent=2))
    else:
        import yaml

        typer.echo(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), nl=False)


def _console() -> Any:
    from rich.console import Console

    return Console()


@app.command(epilog=EPILOG)
def estimate(
    model: Annotated[str, typer.Argument(help="Model preset name, alias or Hugging Face id.",
                                         autocompletion=_complete_model)],
    gpu: Annotated[str | None, typer.Option(help="GPU preset to check the fit against (no verdict without).",
                                            autocompletion=_complete_gpu)] = None,
    method: Annotated[Literal["full", "lora", "qlora", "freeze"], typer.Option(help="Fine-tuning method.")] = "full",
    precision: Annotated[Literal["bf16", "fp16", "pure-bf16", "pure-fp16", "mixed-bf16", "mixed-fp16", "amp-bf16",
                                 "amp-fp16", "fp32"],
                         typer.Option(help="What weights, grads and optimizer states are stored in.")] = "bf16",
    optimizer: Annotated[Literal["adamw", "adamw-8bit", "paged-adamw", "paged-adamw-8bit", "sgd", "sgd-momentum",
                                 "adafactor", "lion"], typer.Option(help="Optimizer.")] = "adamw",
    optimizer_impl: Annotated[Literal["fused", "foreach", "for-loop"],
                              typer.Option(help="Optimizer kernel: fused (no temporaries), foreach (PyTorch's "
                                                "CUDA default), for-loop.")] = "fused",
    batch_size: Annotated[int, typer.Option(help="Micro-batch size per GPU.")] = 1,
    seq_len: Annotated[int, typer.Option(help="Sequence length in tokens.")] = 512,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    grad_checkpointing: Annotated[bool, typer.Option(help="Gradient (activation) checkpointing.")] = False,
    attention: Annotated[Literal["sdpa", "eager"],
                         typer.Option(help="Attention kernel: sdpa (flash / memory-efficient) or eager.")] = "sdpa",
    lora_rank: Annotated[int, typer.Option(help="LoRA rank r.")] = 16,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha (no effect on memory).")] = 32.0,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout (p > 0 keeps a copy of each adapted input).")]
    = 0.0,
    lora_targets: Annotated[str, typer.Option(help="Comma-separated module names, or all-linear.")]
    = "q_proj,v_proj",
    adapter_dtype: Annotated[Literal["fp32", "bf16", "fp16"], typer.Option(help="LoRA adapter dtype.")] = "fp32",
    quant_bits: Annotated[int, typer.Option(help="QLoRA base: 4 (NF4) or 8 (int8).")] = 4,
    double_quant: Annotated[bool, typer.Option(help="QLoRA double quantization of the constants.")] = True,
    freeze_layers: Annotated[int | None, typer.Option(help="For --method freeze: layers frozen from the bottom.")]
    = None,
    train_head: Annotated[bool, typer.Option(help="For --method freeze: train the LM head.")] = True,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = "table",
    units: Annotated[Units, typer.Option(help="GB (10^9, as the seed texts count) or GiB (2^30).")] = "GB",
    check: Annotated[bool, typer.Option(help="Exit 1 when a --gpu is given and the run does not fit.")] = False,
) -> None:
    """Estimate the GPU memory of one training step, per component, with a fit verdict.

    Example: vramcalc estimate mistral-7b --method full --gpu rtx4090
    """
    from pydantic import ValidationError

    from vramcalc import presets, render
    from vramcalc.errors import VramcalcError
    from vramcalc.fit import fit
    from vramcalc.memory import estimate as run_estimate
    from vramcalc.specs import TrainingSpec

    try:
        if quant_bits not in (4, 8):
            raise BadInput(f"--quant-bits must be 4 or 8, not {quant_bits}")
        spec = presets.find_model(model)
        gpu_spec = presets.find_gpu(gpu) if gpu else None
        training = TrainingSpec(
            method=method, precision=precision, optimizer=optimizer, optimizer_impl=optimizer_impl,
            batch_size=batch_size, seq_len=seq_len, grad_accum=grad_accum, grad_checkpointing=grad_checkpointing,
            attention=attention, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            lora_targets=tuple(x.strip() for x in lora_targets.split(",") if x.strip()),
            adapter_dtype=adapter_dtype, quant_bits=quant_bits, double_quant=double_quant,
            freeze_layers=freeze_layers, train_head=train_head,
        )
        breakdown = run_estimate(spec, training)
    except (VramcalcError, ValidationError, BadInput) as e:
        raise _fail(e) from None
    verdict = fit(breakdown, gpu_spec) if gpu_spec else None
    if gpu_spec is not None and not gpu_spec.bf16 and "bf16" in precision:
        breakdown = _with_note(breakdown, f"{gpu_spec.display_name} has no bf16 support: use fp16 variants "
                                          "(--precision fp16 / mixed-fp16 / amp-fp16).")
    if fmt in ("json", "yaml"):
        _emit(render.to_json(breakdown, training, verdict, units), fmt)
    elif fmt == "markdown":
        typer.echo(render.markdown(spec, breakdown, training, verdict, units), nl=False)
    else:
        _console().print(render.table(spec, breakdown, training, verdict, units))
    if check and verdict is not None and not verdict.fits:
        raise typer.Exit(code=1)


def _with_note(b: Any, note: str) -> Any:
    from dataclasses import replace

    return replace(b, notes=(note, *b.notes))


@app.command()
def models(
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = "table",
) -> None:
    """List the model presets with their parameter counts. Example: vramcalc models --format json"""
    from vramcalc import presets
    from vramcalc.errors import VramcalcError
    from vramcalc.params import count_params
    from vramcalc.specs import ModelSpec

    try:
        specs = [s for s in presets.models().specs if isinstance(s, ModelSpec)]
    except VramcalcError as e:
        raise _fail(e) from None
    rows = [{"name": s.name, "display_name": s.display_name or s.name, "family": s.family,
             "parameters": count_params(s), "aliases": list(s.aliases), "source": s.source} for s in specs]
    rows.sort(key=lambda r: (r["family"], r["parameters"]))
    if fmt in ("json", "yaml"):
        _emit({"models": rows}, fmt)
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
def gpus(
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = "table",
) -> None:
    """List the GPU presets with their memory. Example: vramcalc gpus"""
    from vramcalc import presets, render
    from vramcalc.errors import VramcalcError
    from vramcalc.specs import GpuSpec

    try:
        specs = [s for s in presets.gpus().specs if isinstance(s, GpuSpec)]
    except VramcalcError as e:
        raise _fail(e) from None
    specs.sort(key=lambda g: (g.vendor, g.memory_bytes, g.name))
    rows = [{"name": g.name, "display_name": g.display_name, "memory_bytes": g.memory_bytes, "bf16": g.bf16,
             "fp8": g.fp8, "vendor": g.vendor, "source": g.source} for g in specs]
    if fmt in ("json", "yaml"):
        _emit({"gpus": rows}, fmt)
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
    model: Annotated[str, typer.Argument(help="Model preset name, alias or Hugging Face id.",
                                         autocompletion=_complete_model)],
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = "table",
) -> None:
    """Show a model's architecture and its parameter count broken down. Example: vramcalc show mistral-7b"""
    from vramcalc import presets
    from vramcalc.errors import VramcalcError
    from vramcalc.params import count_params, params_by_name

    try:
        spec = presets.find_model(model)
    except VramcalcError as e:
        raise _fail(e) from None
    doc = {"model": spec.name, "architecture": spec.model_dump(exclude_defaults=False),
           "parameters": count_params(spec), "breakdown": params_by_name(spec)}
    if fmt in ("json", "yaml"):
        _emit(doc, fmt)
        return
    from rich.table import Table

    tbl = Table("tensor group", "parameters", "share", title=f"{spec.display_name or spec.name}: "
                f"{doc['parameters']:,} parameters", title_justify="left", show_edge=False)
    total = doc["parameters"] or 1
    for name, n in doc["breakdown"].items():
        tbl.add_row(name, f"{n:,}", f"{100 * n / total:.1f} %")
    if fmt == "markdown":
        lines = [f"### {spec.name}: {total:,} parameters", "", "| tensor group | parameters |", "| --- | ---: |"]
        lines += [f"| {k} | {v:,} |" for k, v in doc["breakdown"].items()]
        typer.echo("\n".join(lines))
        return
    _console().print(tbl)
    arch = {k: v for k, v in spec.model_dump().items() if v not in (None, (), False, 0) and k != "aliases"}
    _console().print(", ".join(f"{k}={v}" for k, v in arch.items()), highlight=False, soft_wrap=True)


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
