"""`vramcalc presets validate DIR` and `vramcalc presets new --from config.json`: user presets.

Problems are located by line: the YAML is composed (not just loaded), so each entry and each key
carries the mark of where it starts (PyYAML nodes' start_mark), and a pydantic error on field F of
entry N is reported at the line of F's key in entry N.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

presets_app = typer.Typer(
    help="Check user preset directories and write new presets from a Hugging Face config.json. "
    "Example: vramcalc presets validate my-presets",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass(frozen=True)
class Problem:
    """One problem in one preset file, at a 1-based line (0 when the file as a whole is wrong)."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


def _entry_lines(text: str) -> list[tuple[int, dict[str, int]]]:
    """(line of the entry, {key: line of the key}) for each item of a top-level YAML sequence."""
    import yaml

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    out: list[tuple[int, dict[str, int]]] = []
    if isinstance(root, yaml.SequenceNode):
        for item in root.value:
            keys: dict[str, int] = {}
            if isinstance(item, yaml.MappingNode):
                for key_node, _ in item.value:
                    keys[str(key_node.value)] = key_node.start_mark.line + 1
            out.append((item.start_mark.line + 1, keys))
    return out


def check_file(path: Path, kind: str) -> tuple[list[Problem], list[Any]]:
    """Every problem in one preset file, and the specs that validated (kind: "model" or "gpu")."""
    from pydantic import ValidationError

    from vramcalc.errors import PresetFileError
    from vramcalc.presets import read_yaml
    from vramcalc.specs import GpuSpec, ModelSpec

    p = str(path)
    try:
        data = read_yaml(path)
    except PresetFileError as e:
        read_problems = []
        for msg in e.problems:
            line = 0
            if msg.startswith("line "):
                head, _, msg = msg.partition(": ")
                line = int(head.split()[1])
            read_problems.append(Problem(p, line, msg))
        return read_problems, []
    if data is None:
        return [Problem(p, 0, "file is empty: expected a list of presets")], []
    if not isinstance(data, list):
        return [
            Problem(p, 1, f"expected a list of presets (lines starting with '- '), got {type(data).__name__}")
        ], []
    lines = _entry_lines(path.read_text(encoding="utf-8"))  # JSON is YAML: the marks work for both
    spec_type: type[ModelSpec] | type[GpuSpec] = ModelSpec if kind == "model" else GpuSpec
    problems: list[Problem] = []
    specs: list[Any] = []
    for i, entry in enumerate(data):
        entry_line, key_lines = lines[i] if i < len(lines) else (0, {})
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"entry {i + 1}" + (f" ({name})" if name else "")
        if not isinstance(entry, dict):
            problems.append(
                Problem(p, entry_line, f"{where}: expected a mapping of fields, got {type(entry).__name__}")
            )
            continue
        try:
            spec = spec_type.model_validate(entry)
        except ValidationError as e:
            for err in e.errors():
                field = ".".join(str(x) for x in err["loc"])
                line = key_lines.get(str(err["loc"][0]), entry_line) if err["loc"] else entry_line
                msg = err["msg"].removeprefix("Value error, ")
                problems.append(Problem(p, line, f"{where}: {field + ': ' if field else ''}{msg}"))
            continue
        specs.append((spec, entry_line, key_lines))
        if isinstance(spec, ModelSpec) and spec.published_parameters is not None:
            from vramcalc.params import count_params

            counted = count_params(spec)
            if counted != spec.published_parameters:
                problems.append(
                    Problem(
                        p,
                        key_lines.get("published_parameters", entry_line),
                        f"{where}: the architecture gives {counted:,} parameters, "
                        f"published_parameters says {spec.published_parameters:,}",
                    )
                )
    return problems, specs


def check_dir(directory: Path) -> tuple[list[Problem], dict[str, int], list[str]]:
    """Problems of every preset file under a directory; counts of valid entries; override notices."""
    from vramcalc import presets

    problems: list[Problem] = []
    counts = {"model": 0, "gpu": 0, "file": 0}
    notices: list[str] = []
    for kind in ("model", "gpu"):
        builtin = presets.models(()) if kind == "model" else presets.gpus(())
        seen: dict[str, str] = {}
        for path in presets._files(directory, kind + "s"):
            counts["file"] += 1
            found, specs = check_file(path, kind)
            problems += found
            for spec, line, _ in specs:
                key = presets.normalize(spec.name)
                if key in seen:
                    problems.append(
                        Problem(
                            str(path), line, f"duplicate {kind} name {spec.name!r} (first at {seen[key]})"
                        )
                    )
                    continue
                seen[key] = f"{path}:{line}"
                counts[kind] += 1
                if key in {presets.normalize(n) for n in builtin.names()}:
                    notices.append(f"{path}:{line}: {kind} {spec.name!r} overrides the built-in preset")
    return problems, counts, notices


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


def preset_entry(loaded: Any, name: str | None, source: str | None) -> dict[str, Any]:
    """A preset entry (plain dict, preset field order) for a model read from disk."""
    from vramcalc.params import count_params

    spec = loaded.spec
    entry: dict[str, Any] = {
        "name": name or spec.name,
        "display_name": name or spec.display_name or spec.name,
        "source": source or spec.source,
    }
    if spec.aliases:
        entry["aliases"] = list(spec.aliases)
    dumped = spec.model_dump(exclude_defaults=True, exclude={"name", "display_name", "source", "aliases"})
    entry.update({k: list(v) if isinstance(v, tuple) else v for k, v in dumped.items()})
    ckpt = loaded.checkpoint
    if ckpt is not None and ckpt.elements == count_params(spec):
        entry["published_parameters"] = ckpt.elements
        entry["published_parameters_source"] = f"safetensors headers of {', '.join(ckpt.files)}"
    return entry


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
    import yaml

    from vramcalc.errors import VramcalcError
    from vramcalc.model_files import load_model_path

    try:
        loaded = load_model_path(from_path)
        if output is not None and output.exists() and not force:
            raise VramcalcError(f"{output} exists; pass --force to overwrite it or choose another --output")
        entry = preset_entry(loaded, name.strip().lower().replace(" ", "-") if name else None, source)
        from vramcalc.specs import ModelSpec

        ModelSpec.model_validate(entry)  # the file we write must load
    except VramcalcError as e:
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        raise typer.Exit(code=2) from None
    text = f"# Written by `vramcalc presets new --from {from_path}`.\n"
    text += yaml.safe_dump([entry], sort_keys=False, allow_unicode=True)
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
