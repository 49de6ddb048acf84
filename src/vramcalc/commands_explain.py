"""The `explain` command: the estimate's arithmetic line by line, or two configurations side by side.

Registered in cli.py. The options repeat `estimate`'s (to be unified with the shared options module).
"""

from __future__ import annotations

import json
import shlex
from typing import Annotated, Any, Literal

import typer

ExplainFormat = Literal["text", "markdown", "json"]

# Options a --diff side may not set: they describe the output, not the run.
_NOT_PER_SIDE = {"diff", "fmt", "units", "check", "only"}


def _complete_model(incomplete: str) -> list[str]:
    from vramcalc import presets

    return [n for n in presets.models().names() if n.startswith(incomplete.lower())]


def explain(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model preset name, alias or Hugging Face id.",
                                         autocompletion=_complete_model)],
    gpu: Annotated[str | None, typer.Option(help="GPU preset: adds the fit verdict at the end.")] = None,
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
    diff: Annotated[tuple[str, str] | None, typer.Option(
        metavar="A B",
        help="Compare two configurations: each is a quoted option string applied on top of the other options, "
             "e.g. --diff \"--method full\" \"--method qlora\". A side may start with another model name.")] = None,
    only: Annotated[str | None, typer.Option(
        metavar="SECTIONS",
        help="Comma-separated sections to show: parameters, weights, gradients, optimizer_state, "
             "activations_per_layer, activations, temporaries, phases, overhead.")] = None,
    fmt: Annotated[ExplainFormat, typer.Option("--format", help="text, markdown (a document) or json.")] = "text",
    units: Annotated[Literal["GB", "GiB"], typer.Option(help="GB (10^9, as the seed texts count) or GiB (2^30).")]
    = "GB",
    check: Annotated[bool, typer.Option(help="Exit 1 when a --gpu is given and the run does not fit.")] = False,
) -> None:
    """Show the arithmetic behind an estimate: formula, inputs, result and source, line by line.

    Each component (weights, gradients, optimizer state, activations term by term, temporaries), then the
    phase model (what is alive at the end of forward, during backward and at the optimizer step, and which
    wins), then the runtime overhead. With --diff, two configurations side by side and what changed.

    Example: vramcalc explain mistral-7b --method lora

    Example: vramcalc explain mistral-7b --diff "--method full" "--method qlora"
    """
    from pydantic import ValidationError

    from vramcalc import explain as ex
    from vramcalc.cli import BadInput, _fail
    from vramcalc.errors import VramcalcError

    shared = {k: v for k, v in ctx.params.items() if k not in _NOT_PER_SIDE}
    sections = tuple(x.strip() for x in (only or "").split(",") if x.strip())
    try:
        unknown = [x for x in sections if x not in ex.SECTION_KEYS]
        if unknown:
            raise BadInput(f"--only: unknown section {unknown[0]!r}; choose from {', '.join(ex.SECTION_KEYS)}")
        if diff is None:
            spec, training, gpu_spec = _resolve(shared)
            e = ex.explain(spec, training)
        else:
            sides = [_resolve(_apply_side(ctx, shared, side)) for side in diff]
            d = ex.diff(ex.explain(sides[0][0], sides[0][1]), ex.explain(sides[1][0], sides[1][1]))
    except (VramcalcError, ValidationError, BadInput) as err:
        raise _fail(err) from None

    if diff is not None:
        if fmt == "json":
            typer.echo(json.dumps(ex.diff_json(d, diff), indent=2))
        elif fmt == "markdown":
            typer.echo(ex.diff_markdown(d, diff, units), nl=False)
        else:
            typer.echo(ex.diff_text(d, diff, units), nl=False)
        return

    verdict = None
    if gpu_spec is not None:
        from vramcalc.fit import fit
        from vramcalc.render import verdict_line

        verdict = fit(e.breakdown, gpu_spec)
    if fmt == "json":
        doc = ex.to_json(e, sections)
        if verdict is not None:
            doc.update(gpu=gpu_spec.name if gpu_spec else None, fits=verdict.fits,
                       headroom_bytes=verdict.headroom_bytes)
        typer.echo(json.dumps(doc, indent=2))
    else:
        text = ex.to_markdown(e, units, sections) if fmt == "markdown" else ex.to_text(e, units, sections)
        if verdict is not None:
            text += ("\n**" + verdict_line(verdict, units) + "**\n" if fmt == "markdown"
                     else verdict_line(verdict, units) + "\n")
        typer.echo(text, nl=False)
    if check and verdict is not None and not verdict.fits:
        raise typer.Exit(code=1)


def _resolve(values: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(ModelSpec, TrainingSpec, GpuSpec | None) from option values, as `estimate` builds them."""
    from vramcalc import presets
    from vramcalc.cli import BadInput
    from vramcalc.specs import TrainingSpec

    if values["quant_bits"] not in (4, 8):
        raise BadInput(f"--quant-bits must be 4 or 8, not {values['quant_bits']}")
    spec = presets.find_model(values["model"])
    gpu_spec = presets.find_gpu(values["gpu"]) if values.get("gpu") else None
    fields = {k: v for k, v in values.items() if k not in ("model", "gpu")}
    fields["lora_targets"] = tuple(x.strip() for x in str(values["lora_targets"]).split(",") if x.strip())
    return spec, TrainingSpec(**fields), gpu_spec


def _apply_side(ctx: typer.Context, shared: dict[str, Any], side: str) -> dict[str, Any]:
    """Shared option values overridden by the options given in one --diff side (shlex-split)."""
    from vramcalc.cli import BadInput

    try:
        tokens = shlex.split(side)
    except ValueError as e:
        raise BadInput(f"--diff side {side!r}: {e}") from None
    args = tokens if tokens and not tokens[0].startswith("-") else [shared["model"], *tokens]
    try:
        sub = ctx.command.make_context(ctx.info_name or "explain", args, parent=ctx.parent)
    except Exception as e:  # Click's UsageError (vendored by newer Typer): duck-typed on format_message
        if not hasattr(e, "format_message"):
            raise
        raise BadInput(f"--diff side {side!r}: {' '.join(e.format_message().split())}") from None
    values = dict(shared)
    for name, value in sub.params.items():
        source = sub.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            if name in _NOT_PER_SIDE:
                raise BadInput(f"--diff side {side!r}: output options (--format, --units, --check, --only, --diff) "
                               "go outside the quoted strings")
            values[name] = value
    return values
