"""The console entry point, with a fast path for the common `estimate` invocation.

`vramcalc estimate mistral-7b --method full --gpu rtx4090` should answer before the user notices,
but importing Typer, rich and pydantic alone costs several hundred milliseconds. This module
handles the plain, common case without them:

- a small hand parser that accepts only a whitelist of `estimate` options with values it fully
  understands (choices checked against TrainingSpec's own Literal fields, positive decimal ints);
- the presets from the compiled index (`_index.py`), as already-validated `Record`s;
- the unchanged arithmetic core (`memory.estimate`, `fit`) and render.py's own text functions;
- render.report_lines, the same report the Typer path prints through rich, printed as plain text
  only when rich would print no escape codes (stdout is not a terminal, no FORCE_COLOR / TTY_COMPATIBLE).

Anything else (another command, --help, an unknown or repeated option, a value it would have to
reject, a terminal, a preset it does not know, a table too wide for the console, any exception)
returns None before a byte is written, and the Typer app handles the invocation exactly as
before, errors included. tests/test_fastpath.py asserts identical stdout and exit codes.
Set VRAMCALC_NO_FASTPATH=1 to always take the Typer path.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

# Options the fast path parses: CLI flag -> TrainingSpec field (choices come from the spec itself).
_CHOICE_FIELDS = {
    "--method": "method",
    "--precision": "precision",
    "--optimizer": "optimizer",
    "--optimizer-impl": "optimizer_impl",
    "--attention": "attention",
    "--adapter-dtype": "adapter_dtype",
}
_INT_FIELDS = {
    "--batch-size": "batch_size",
    "--seq-len": "seq_len",
    "--grad-accum": "grad_accum",
    "--lora-rank": "lora_rank",
}
_BOOL_FLAGS = {
    "--grad-checkpointing": ("grad_checkpointing", True),
    "--no-grad-checkpointing": ("grad_checkpointing", False),
    "--check": ("check", True),
    "--no-check": ("check", False),
}
_OTHER = {
    "--gpu": ("gpu", None),
    "--format": ("format", ("table", "json")),
    "--units": ("units", ("GB", "GiB")),
    "--lora-targets": ("lora_targets", None),
}
_METHODS = ("full", "lora", "qlora")  # freeze needs --freeze-layers: left to the Typer path
_ENV_BLOCKERS = (
    "VRAMCALC_NO_FASTPATH",
    "VRAMCALC_PRESETS",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "JUPYTER_COLUMNS",
)


def parse(argv: list[str], choices: Mapping[str, list[Any]]) -> dict[str, Any] | None:
    """The options of a plain `estimate` command line, or None for anything not fully understood."""
    if len(argv) < 2 or argv[0] != "estimate":
        return None
    opts: dict[str, Any] = {}
    i = 1
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-"):
            if "model" in opts:
                return None
            opts["model"] = arg
            continue
        name, eq, value = arg.partition("=")
        if name in _BOOL_FLAGS:
            if eq:
                return None
            field, flag = _BOOL_FLAGS[name]
            if field in opts:
                return None
            opts[field] = flag
            continue
        if name not in _CHOICE_FIELDS and name not in _INT_FIELDS and name not in _OTHER:
            return None  # -h, --help, --version, --freeze-layers, anything new: Typer decides
        if not eq:
            if i >= len(argv):
                return None
            value = argv[i]
            i += 1
        if value.startswith("-") or not value:
            return None
        if name in _CHOICE_FIELDS:
            field = _CHOICE_FIELDS[name]
            if value not in choices.get(field, ()):
                return None
            parsed: Any = value
        elif name in _INT_FIELDS:
            field = _INT_FIELDS[name]
            if not (value.isascii() and value.isdigit()) or len(value) > 12 or int(value) < 1:
                return None
            parsed = int(value)
        else:
            field, allowed = _OTHER[name]
            if allowed is not None and value not in allowed:
                return None
            parsed = value
        if field in opts:
            return None
        opts[field] = parsed
    if "model" not in opts or opts.get("method", "full") not in _METHODS:
        return None
    return opts


def console_width(environ: Mapping[str, str]) -> int:
    """The width rich's Console would use when stdout is not a terminal (rich console.py `size`)."""
    width = 0
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    columns = environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        width = int(columns)
    return width or 80


def probe(index: dict[str, Any]) -> dict[str, Any]:
    """Which outputs the fast path may produce: compared end to end with the Typer app's own output.

    Run when the index is compiled (Typer, rich and pydantic are loaded then anyway), on a few
    presets, methods, formats and console widths. Returns {"table_ok": bool, "json_ok": bool}. Both
    paths render through render.report_lines / render.to_json, so a mismatch means the Typer path
    gained something (a note, an option) that this module does not reproduce yet. The index is
    rebuilt whenever cli.py, render.py or this module changes, so a
    changed command or layout switches that output off instead of printing something different.
    """
    from typer.testing import CliRunner

    from vramcalc import cli

    runner = CliRunner()
    models = list(index["models"])
    arch = [n for n in models if index["models"][n].get("has_architecture")][:2]
    count_only = [n for n in models if not index["models"][n].get("has_architecture")][:1]
    gpus = list(index["gpus"])[:2]
    cases: list[list[str]] = []
    for name in arch + count_only:
        cases += [["estimate", name], ["estimate", name, "--method", "lora", "--gpu", gpus[0], "--check"]]
        cases += [["estimate", name, "--method", "qlora", "--gpu", gpus[-1]]]
    table_ok = json_ok = True
    for argv in cases:
        for fmt in ("table", "json"):
            full = argv + (["--format", "json"] if fmt == "json" else [])
            for width in (80, 100, 200) if fmt == "table" else (80,):
                env = {"COLUMNS": str(width)}
                result = runner.invoke(cli.app, full, env=env)
                got = _answer(full, env, {**index, "table_ok": True, "json_ok": True})
                if got not in (None, (result.stdout, result.exit_code)):
                    table_ok = table_ok and fmt != "table"
                    json_ok = json_ok and fmt != "json"
    return {"table_ok": table_ok, "json_ok": json_ok}


def run(argv: list[str], environ: Mapping[str, str], stdout: TextIO) -> int | None:
    """Handle `argv` on the fast path and return the exit code, or None (nothing written) to use Typer."""
    if any(environ.get(k) is not None for k in _ENV_BLOCKERS) or sys.platform == "win32":
        return None
    if not argv or argv[0] != "estimate":
        return None
    try:
        if stdout.isatty() or (getattr(stdout, "encoding", "") or "").lower().replace("-", "") != "utf8":
            return None
    except (AttributeError, ValueError):
        return None
    try:
        from vramcalc._index import load_index

        answer = _answer(argv, environ, load_index())
    except Exception:  # noqa: BLE001 - any surprise: the Typer path answers instead, nothing was written
        return None
    if answer is None:
        return None
    text, code = answer
    stdout.write(text)
    stdout.flush()
    return code


def _answer(argv: list[str], environ: Mapping[str, str], index: Mapping[str, Any]) -> tuple[str, int] | None:
    """The text to print and the exit code, or None; writes nothing."""
    import json

    from vramcalc._index import Record, normalize

    if index.get("training_properties"):
        return None  # TrainingSpec grew computed properties a Record cannot provide
    opts = parse(argv, index["training_choices"])
    if opts is None:
        return None
    fmt = opts.get("format", "table")
    if not index.get("json_ok" if fmt == "json" else "table_ok"):
        return None
    model_name = index["model_keys"].get(normalize(opts.pop("model")))
    gpu_arg = opts.pop("gpu", None)
    gpu_name = index["gpu_keys"].get(normalize(gpu_arg)) if gpu_arg is not None else None
    if model_name is None or (gpu_arg is not None and gpu_name is None):
        return None  # unknown preset: the Typer path prints the suggestion
    fmt, unit, check = opts.pop("format", "table"), opts.pop("units", "GB"), opts.pop("check", False)
    training_values = dict(index["training_defaults"])
    if "lora_targets" in opts:
        targets = tuple(x.strip() for x in opts.pop("lora_targets").split(",") if x.strip())
        if not targets:
            return None
        training_values["lora_targets"] = targets
    training_values.update(opts)
    model = Record(index["models"][model_name])
    gpu = Record(index["gpus"][gpu_name]) if gpu_name else None
    training = Record(training_values)

    from dataclasses import replace

    from vramcalc import render
    from vramcalc.errors import VramcalcError
    from vramcalc.fit import fit, precision_note
    from vramcalc.margin import Margin, classify
    from vramcalc.memory import estimate

    # What whatif.estimate_rows does for one run from the command line, with the default margin.
    try:
        breakdown = estimate(model, training)  # type: ignore[arg-type]
    except VramcalcError:
        return None  # bad input: the Typer path prints the one-line error
    verdict = status = margin = None
    if gpu is not None:
        warning = precision_note(gpu, training.precision)  # type: ignore[arg-type]
        if warning:
            breakdown = replace(breakdown, notes=(warning, *breakdown.notes))
        verdict = fit(breakdown, gpu)  # type: ignore[arg-type]
        margin = Margin()
        status = classify(breakdown.peak_bytes, gpu.memory_bytes, margin)
    if fmt == "json":
        doc = render.to_json(breakdown, training, verdict, unit, status, Margin())  # type: ignore[arg-type]
        text = json.dumps(doc, indent=2) + "\n"
    else:
        width = console_width(environ)
        text = render.plain(render.report_lines(model, breakdown, training, verdict, unit, width,  # type: ignore[arg-type]
                                                status, margin))
    return text, 1 if check and status == "DOES NOT FIT" else 0


def main() -> None:
    """Console entry point: the fast path when it applies, else the Typer app (vramcalc.cli.main)."""
    try:
        code = run(sys.argv[1:], os.environ, sys.stdout)
    except BrokenPipeError:  # `vramcalc ... | head -1`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    if code is None:
        from vramcalc.cli import main as typer_main

        typer_main()
    else:
        sys.exit(code)
