"""`vramcalc estimate`: one run (or each run of a --config file), the report, the verdict, the exit code.

Light at import: no Typer or rich (the entry point answers `estimate` without loading them; see cli/fast.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from vramcalc.cli.common import training_spec
from vramcalc.cli.output import colour_wanted, csv_text, echo, emit, print_lines, terminal_width
from vramcalc.cli.runs import CSV_COLUMNS, STATUS_STYLE, flat_row, margin_of, targets
from vramcalc.core.errors import BadInput
from vramcalc.core.options import Opt, OptionValues
from vramcalc.core.vocab import OUT_FORMATS, UNITS
from vramcalc.io.resolve import adapter_options, resolve_model


@dataclass
class EstimateRow:
    """One estimated run, ready to print."""

    name: str | None
    spec: Any
    training: Any
    breakdown: Any
    verdict: Any
    status: str | None
    source: Any  # runfiles.Run or None
    auto_batch: dict[str, Any] | None = None  # --auto-find-batch-size: where the Trainer's retries end (with a GPU)


def estimate_rows(
    model: str | None,
    gpu: str | None,
    max_memory: str | None,
    config: str | None,
    opts: OptionValues,
    margin: Any,
) -> list[EstimateRow]:
    """Every run asked for: one from the command line, or each run of --config (flags override)."""
    from vramcalc.core.fit import fit, precision_note
    from vramcalc.core.margin import classify
    from vramcalc.core.memory import estimate as run_estimate

    if gpu and max_memory:
        raise BadInput(f"--gpu {gpu} and --max-memory {max_memory} both set a budget: pass one of them")
    if config:
        from vramcalc.io import runfiles  # only for a run file: the plain command line does not pay for it

        runs = runfiles.load(config)
    else:
        runs = [NO_FILE]
    rows = []
    for run in runs:
        ref = model or run.model
        if ref is None:
            hint = f" ({run.notes[-1].rstrip('.')})" if run.notes else ""
            raise BadInput(
                f"no model{hint}; pass MODEL (a preset or a config.json path) or put `model:` in the run file"
            )
        base = Path(run.path).parent if run.path and model is None else None
        spec, model_notes = resolve_model(ref, base)
        adapter = adapter_options(ref, base)  # a PEFT adapter folder's own LoRA settings, under the file's
        gpu_name = gpu or run.gpu
        gpus = targets([gpu_name] if gpu_name else [], max_memory)
        if len(gpus) > 1:
            gpus = gpus[-1:]  # --max-memory wins over a GPU named in the run file
        training = training_spec(opts.run({**adapter, **run.options}))
        gpu_spec = gpus[0] if gpus else None
        serving = gpu_spec if training.mode == "serve" else None  # the GPU a vLLM server runs on
        if serving is not None:  # vllm serve's defaults depend on the GPU (memory/vllm.py settings)
            from vramcalc.core.memory import vllm

            training = vllm.with_gpu_defaults(spec, training, serving.memory_bytes, serving.name)
        b = run_estimate(spec, training)
        notes = [n for n in [*model_notes, run.note(), *run.notes, *_stack_notes(training)] if n]
        warning = precision_note(gpu_spec, training.precision) if gpu_spec is not None else None
        if warning:
            notes.insert(0, warning)
        if serving is not None:  # what vLLM allocates on this GPU: its pool, blocks and concurrency (memory/vllm.py)
            notes[:0] = vllm.gpu_report(spec, training, serving.memory_bytes, serving.name)[0]
        if gpu_spec is not None and "vllm.training_step" in b.details:  # GRPO + colocated vLLM (memory/rl.py)
            from vramcalc.core.memory import rl

            notes[:0] = rl.colocate_gpu_notes(spec, training, b.details["vllm.training_step"],
                                              b.details["vllm.training_held"], gpu_spec.memory_bytes, gpu_spec.name)
        if notes:
            b = replace(b, notes=(*notes, *b.notes))
        v = fit(b, gpu_spec) if gpu_spec is not None else None
        if v is not None and "vllm.training_step" in b.details:  # colocated vLLM: what is left once it takes its share
            from vramcalc.core.memory import rl

            needed = rl.needed_on_gpu(spec, training, b.details["vllm.training_step"],
                                      b.details["vllm.training_held"], v.gpu.memory_bytes)
            v = replace(v, needed_bytes=needed, headroom_bytes=v.gpu.memory_bytes - needed)
        if serving is not None and v is not None:  # the smallest GPU also leaves (1 - utilization) for context, graphs
            needed = vllm.min_gpu_bytes(spec, training, training.batch_size, serving.memory_bytes, serving.name)
            v = replace(v, needed_bytes=needed, headroom_bytes=serving.memory_bytes - needed)
        status = classify(v.needed_bytes, v.gpu.memory_bytes, margin) if v is not None else None
        if status == "FITS" and run.unmodelled:
            status = "TIGHT"  # keys that change memory and are not modelled (named in the run's first note)
        auto = None
        if training.auto_find_batch_size:
            auto, line = _auto_batch(spec, training, v)
            b = replace(b, notes=(line, *b.notes))
        rows.append(EstimateRow(run.name, spec, training, b, v, status, run if config else None, auto))
    return rows


def _auto_batch(spec: Any, training: Any, verdict: Any) -> tuple[dict[str, Any] | None, str]:
    """HF Trainer auto_find_batch_size: the batch its out-of-memory retries end at on the verdict's GPU (the search
    of core/searches.py, on the budget the verdict uses), and the note saying so."""
    start = (f"auto_find_batch_size: the Trainer starts at batch {training.batch_size} and retries at "
             "int(batch x 0.9) after each out-of-memory error (accelerate find_executable_batch_size)")
    accum = (f"gradient accumulation stays {training.grad_accum} (only the batch changes: Trainer."
             "_update_auto_batch_size), so the effective batch shrinks with it")
    if verdict is None:
        return None, f"{start}; the estimate is for batch {training.batch_size}: pass --gpu to see where it ends."
    from vramcalc.core.searches import Estimator, auto_batch_size

    end = auto_batch_size(Estimator(spec), training, verdict.gpu.memory_bytes)
    doc = {"start_batch_size": training.batch_size, "end_batch_size": end, "grad_accum": training.grad_accum}
    if end is None:
        return doc, (f"{start}; on {verdict.gpu.name} no batch fits, down to 1: it raises 'No executable batch size "
                     "found, reached zero'.")
    if end == training.batch_size:
        return doc, f"{start}; on {verdict.gpu.name} batch {end} fits, so it runs as configured."
    return doc, (f"{start}; on {verdict.gpu.name} it ends at batch {end} (estimated at batch "
                 f"{training.batch_size} here); {accum}.")


def _stack_notes(training: Any) -> list[str]:
    """What the run's stack does that is not modelled (presets/stacks/*.yaml notes)."""
    if training.stack == "hf":
        return []
    from vramcalc.io.stacks import stack_notes

    return stack_notes(training)


def estimate_doc(row: EstimateRow, margin: Any, units: str) -> dict[str, Any]:
    """render.to_json plus `status`, `margin` and, for a file, `config_source`."""
    from vramcalc.cli import render

    doc = render.to_json(row.breakdown, row.training, row.verdict, units, row.status, margin, row.spec.family)
    if row.source is not None:
        doc["name"] = row.name
        doc["config_source"] = row.source.source_doc()
    if row.auto_batch is not None:
        doc["auto_find_batch_size"] = row.auto_batch
    return doc




def print_estimate(rows: list[EstimateRow], margin: Any, fmt: str, units: str, no_color: bool) -> None:
    """Print one run as the full report, several as one table of rows."""
    from vramcalc.cli import bars, render

    if fmt in ("json", "yaml"):
        docs = [estimate_doc(r, margin, units) for r in rows]
        emit(docs[0] if len(docs) == 1 and rows[0].source is None else {"runs": docs}, fmt)
        return
    if fmt == "csv":
        echo(
            csv_text(
                CSV_COLUMNS,
                [
                    flat_row(
                        r.breakdown,
                        r.training,
                        r.verdict and r.verdict.gpu,
                        r.status,
                        r.verdict and r.verdict.headroom_bytes,
                        r.name,
                        r.spec.family,
                    )
                    for r in rows
                ],
            ),
            nl=False,
        )
        return
    if fmt == "markdown" and len(rows) == 1:
        r = rows[0]
        text = render.markdown(r.spec, r.breakdown, r.training, r.verdict, units)
        if r.status is not None:
            text += f"\nStatus: **{r.status}** (margin {margin.describe()})\n"
        echo(text, nl=False)
        return
    if fmt == "markdown":
        lines = [
            "| run | model | method | batch × seq | peak | GPU | status | headroom |",
            "| --- | --- | --- | --- | ---: | --- | --- | ---: |",
        ]
        for i, r in enumerate(rows, 1):
            t, v = r.training, r.verdict
            lines.append(
                f"| {r.name or i} | {r.breakdown.model} | {t.method} | {t.batch_size} × {t.seq_len} | "
                f"{render.format_bytes(r.breakdown.peak_bytes, units)} | {v.gpu.name if v else ''} | "
                f"{r.status or ''} | {render.format_bytes(v.headroom_bytes, units) if v else ''} |"
            )
        lines += ["", f"Margin: TIGHT below {margin.describe()}."]
        echo("\n".join(lines) + "\n", nl=False)
        return
    if len(rows) == 1:
        r = rows[0]
        colour = colour_wanted(no_color)
        report = render.report_lines(r.spec, r.breakdown, r.training, r.verdict, units, terminal_width(), r.status,
                                     margin if r.verdict is not None else None, colour)
        print_lines(report, colour)
        return
    from rich.table import Table

    from vramcalc.cli.output import console, uses_colour

    con = console(no_color)
    colour = uses_colour(con)

    tbl = Table("run", "model", "method", "batch × seq", "peak", "GPU", "status", show_edge=False)
    show_bar = con.width >= 120  # the bar needs room beside seven columns
    if show_bar:
        tbl.add_column("memory", no_wrap=True)
    scale = max(
        max(r.breakdown.sum_bytes for r in rows),
        max((r.verdict.gpu.memory_bytes for r in rows if r.verdict), default=0),
    )
    for i, r in enumerate(rows, 1):
        t = r.training
        cells: list[Any] = [
            r.name or str(i),
            r.breakdown.model,
            t.method,
            f"{t.batch_size} × {t.seq_len}",
            render.format_bytes(r.breakdown.peak_bytes, units),
            r.verdict.gpu.name if r.verdict else "",
            r.status or "",
        ]
        if show_bar:
            cells.append(
                bars.bar(r.breakdown, [r.verdict.gpu.memory_bytes] if r.verdict else [], scale, 24, colour)
            )
        tbl.add_row(
            *cells,
            style=STATUS_STYLE[r.status] if colour else "",
        )
    con.print(tbl)
    con.print(f"margin: {margin.describe()}", style="dim")


class _CommandLine:
    """The run of a plain command line: what io.runfiles.Run holds for a file, all empty."""

    name = model = gpu = path = None
    options: Mapping[str, Any] = MappingProxyType({})
    notes: tuple[str, ...] = ()
    unmodelled: tuple[str, ...] = ()

    def note(self) -> None:
        return None


NO_FILE = _CommandLine()


# estimate's own options (the run options are core/options.py's OPTIONS): Typer's signature and the fast
# front end's parser are both generated from this table (cli/options.py, cli/fast.py).
OWN_OPTIONS: tuple[Opt, ...] = (
    Opt("gpu", str, None, "GPU preset to check the fit against (no verdict without).", complete="gpu"),
    Opt("fmt", OUT_FORMATS, "table", "Output format (markdown for pull-request comments).", cli="--format"),
    Opt("units", UNITS, "GB", "GB (10^9, as the seed texts count) or GiB (2^30)."),
    Opt("check", bool, False, "Exit 1 when a --gpu is given and the run does not fit."),
    Opt("preset_dirs", str, None, "Extra preset directory (models/*.yaml, gpus.yaml); repeatable; adds to and "
        "overrides the built-in presets, after VRAMCALC_PRESETS.", cli="--presets", multiple=True),
    Opt("max_memory", str, None, "Gate on a memory budget instead of a GPU: 20GB (10^9), 24GiB (2^30) or bytes."),
    Opt("margin", str, None, "Headroom below which a fit is TIGHT: 5% or 0.05 of the estimated peak "
        "(default 7%: the measured error band)."),
    Opt("config", str, None, "Run file (YAML/JSON of option keys, one run or a list) or an axolotl, "
        "LLaMA-Factory, HF TrainingArguments or torchtune config. Command-line options override it."),
    Opt("no_color", bool, False, "Plain output without colour (also NO_COLOR).", cli="--no-color", negatable=False),
    Opt("plot", bool, False, "Also draw the memory over the step (a chart; Mermaid with --format markdown).",
        negatable=False),
)


def run(model: str | None, opts: OptionValues, own: dict[str, Any]) -> int:
    """The whole command: every run asked for, printed in the chosen format; returns the exit code."""
    from vramcalc.io import presets

    presets.use_dirs(own["preset_dirs"] or ())
    m = margin_of(own["margin"])
    if own["check"] and not (own["gpu"] or own["max_memory"] or own["config"]):
        raise BadInput("--check needs --gpu or --max-memory: without a budget there is nothing to check")
    if own["plot"]:  # issue 17: pictures are imported only when asked for
        from vramcalc.cli.pictures import check_format

        check_format(own["fmt"], True)
    rows = estimate_rows(model, own["gpu"], own["max_memory"], own["config"], opts, m)
    print_estimate(rows, m, own["fmt"], own["units"], own["no_color"])
    if own["plot"]:
        from vramcalc.cli.pictures import print_step_plots

        print_step_plots(rows, own["fmt"], own["units"], own["no_color"])
    return 1 if own["check"] and any(r.status == "DOES NOT FIT" for r in rows) else 0


