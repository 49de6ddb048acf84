"""The `explain` command: the estimate's arithmetic line by line, or two configurations side by side.

Registered in cli.py. It takes `estimate`'s options (options.py); a --diff side is parsed as this
command's own options.
"""

from __future__ import annotations

import shlex
from typing import Annotated, Any, Literal

import typer

from vramcalc.cli.common import BadInput, complete_model
from vramcalc.cli.options import with_estimate_options
from vramcalc.core.options import OptionValues
from vramcalc.core.vocab import ExplainFormat

# Options a --diff side may not set: they describe the output, not the run.
_NOT_PER_SIDE = {"diff", "fmt", "units", "check", "only"}


@with_estimate_options()
def explain(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model preset name, alias, Hugging Face id or config.json path.",
                                         autocompletion=complete_model)],
    *,
    opts: OptionValues,
    gpu: Annotated[str | None, typer.Option(help="GPU preset: adds the fit verdict at the end.")] = None,
    diff: Annotated[tuple[str, str] | None, typer.Option(
        metavar="A B",
        help="Compare two configurations: each is a quoted option string applied on top of the other options, "
             "e.g. --diff \"--method full\" \"--method qlora\". A side may start with another model name.")] = None,
    only: Annotated[str | None, typer.Option(
        metavar="SECTIONS",
        help="Comma-separated sections to show: parameters, weights, gradients, optimizer_state, "
             "activations_per_layer, activations, temporaries, phases, overhead.")] = None,
    fmt: Annotated[ExplainFormat, typer.Option(
        "--format", help="text, markdown (a document), json, yaml, or csv (one row per term).")] = "text",
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
    from vramcalc.cli.output import fail
    from vramcalc.core import explain as ex
    from vramcalc.core.errors import VramcalcError
    from vramcalc.core.options import OptionError

    shared = {"model": model, "gpu": gpu, **opts.run()}
    sections = tuple(x.strip() for x in (only or "").split(",") if x.strip())
    try:
        unknown = [x for x in sections if x not in ex.SECTION_KEYS]
        if unknown:
            raise BadInput(f"--only: unknown section {unknown[0]!r}; choose from {', '.join(ex.SECTION_KEYS)}")
        if diff is None:
            spec, training, gpu_spec = _resolve(shared)
            e = ex.explain(spec, training)
        else:
            sides = [_resolve(_apply_side(ctx, shared, side, opts)) for side in diff]
            d = ex.diff(ex.explain(sides[0][0], sides[0][1]), ex.explain(sides[1][0], sides[1][1]))
    except (VramcalcError, BadInput, OptionError) as err:
        raise fail(err) from None

    if diff is not None:
        if fmt in ("json", "yaml", "csv"):
            _emit_doc(ex.diff_json(d, diff), fmt)
        elif fmt == "markdown":
            typer.echo(ex.diff_markdown(d, diff, units), nl=False)
        else:
            typer.echo(_wrapped(ex.diff_text(d, diff, units)), nl=False)
        return

    verdict = None
    if gpu_spec is not None:
        from vramcalc.cli.render import verdict_line
        from vramcalc.core.fit import fit

        verdict = fit(e.breakdown, gpu_spec)
    if fmt in ("json", "yaml", "csv"):
        doc = ex.to_json(e, sections)
        if verdict is not None:
            doc.update(gpu=gpu_spec.name if gpu_spec else None, fits=verdict.fits,
                       headroom_bytes=verdict.headroom_bytes)
        _emit_doc(doc, fmt)
    else:
        text = ex.to_markdown(e, units, sections) if fmt == "markdown" else ex.to_text(e, units, sections)
        if verdict is not None:
            text += ("\n**" + verdict_line(verdict, units) + "**\n" if fmt == "markdown"
                     else verdict_line(verdict, units) + "\n")
        typer.echo(text if fmt == "markdown" else _wrapped(text), nl=False)
    if check and verdict is not None and not verdict.fits:
        raise typer.Exit(code=1)


def _emit_doc(doc: dict[str, Any], fmt: str) -> None:
    """JSON or YAML as the document; CSV as one row per term (section, key, label, value, formula, ...)."""
    from vramcalc.cli.output import csv_text, emit

    if fmt != "csv":
        emit(doc, fmt)
        return
    columns = ["section", "key", "label", "value", "kind", "formula", "inputs", "source"]
    rows = [{"section": sec.get("key"), **line} for sec in doc.get("sections", []) for line in sec.get("lines", [])]
    if not rows:  # --diff: its terms
        rows = list(doc.get("terms", []))
        first = ["key", "label", "kind", "a", "b"]
        columns = first + sorted({k for t in rows for k in t} - set(first))
    typer.echo(csv_text(columns, rows), nl=False)


def _resolve(values: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(ModelSpec, TrainingSpec, GpuSpec | None) from option values, as `estimate` builds them."""
    from vramcalc.cli.common import training_spec
    from vramcalc.io import presets
    from vramcalc.io.resolve import resolve_model

    spec, _ = resolve_model(values["model"])
    gpu_spec = presets.find_gpu(values["gpu"]) if values.get("gpu") else None
    training = training_spec({k: v for k, v in values.items() if k not in ("model", "gpu")})
    return spec, training, gpu_spec


def _apply_side(ctx: typer.Context, shared: dict[str, Any], side: str, opts: OptionValues) -> dict[str, Any]:
    """Shared option values overridden by the options given in one --diff side (shlex-split)."""

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
    given: set[str] = set()
    for name, value in sub.params.items():
        source = sub.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            if name in _NOT_PER_SIDE:
                raise BadInput(f"--diff side {side!r}: output options (--format, --units, --check, --only, --diff) "
                               "go outside the quoted strings")
            values[name] = value
            given.add(name)
    if "stack" in given:  # the side's stack under everything given explicitly (core/options.py precedence)
        run = OptionValues({k: v for k, v in values.items() if k in opts.values},
                           (given | opts.given) & set(opts.values), stacks=opts.stacks).run()
        values.update(run)
    return values


def _wrapped(text: str) -> str:
    """The text report at the terminal's width: a long line continues under its own indent + 4 spaces.

    Table rows (box-drawing characters) are kept whole: a wrapped row would break its columns.
    """
    import textwrap

    from vramcalc.cli.output import terminal_width

    width = max(terminal_width(), 40)
    out: list[str] = []
    for line in text.split("\n"):
        if len(line) <= width or any(ch in line for ch in "│┃━─"):
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        out += textwrap.wrap(line.strip(), width, initial_indent=indent, subsequent_indent=indent + "    ",
                             break_long_words=False, break_on_hyphens=False)
    return "\n".join(out)
