"""Checking user preset files line by line, and writing a preset entry for a model read from disk.

Problems are located by line: the YAML is composed (not just loaded), so each entry and each key
carries the mark of where it starts (PyYAML nodes' start_mark), and a problem with field F of
entry N is reported at the line of F's key in entry N.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from vramcalc.core.errors import PresetFileError, printable
from vramcalc.core.params import count_params
from vramcalc.core.specs import GpuSpec, ModelSpec
from vramcalc.io import presets, validate
from vramcalc.io.files import read_text_bounded
from vramcalc.io.index import kind_files
from vramcalc.io.presets import read_yaml


@dataclass(frozen=True)
class Problem:
    """One problem in one preset file, at a 1-based line (0 when the file as a whole is wrong)."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        path, message = printable(self.path), printable(self.message)
        return f"{path}:{self.line}: {message}" if self.line else f"{path}: {message}"


def _entry_lines(text: str) -> list[tuple[int, dict[str, int]]]:
    """(line of the entry, {key: line of the key}) for each item of a top-level YAML sequence."""
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
    # JSON is YAML: the marks work for both. Read again through the same bounds (read_yaml passed them).
    try:
        lines = _entry_lines(read_text_bounded(path, presets.MAX_PRESET_FILE_BYTES, "the file"))
    except PresetFileError as e:
        return [Problem(p, 0, m) for m in e.problems], []
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
        spec, found = validate.check(spec_type, entry)
        for field, msg in found:
            line = key_lines.get(field.split(".")[0], entry_line) if field else entry_line
            problems.append(Problem(p, line, f"{where}: {validate.problem_text(field, msg)}"))
        if spec is None:
            continue
        specs.append((spec, entry_line, key_lines))
        if isinstance(spec, ModelSpec) and spec.published_parameters is not None:
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
    problems: list[Problem] = []
    counts = {"model": 0, "gpu": 0, "file": 0}
    notices: list[str] = []
    for kind in ("model", "gpu"):
        builtin = presets.load_files(kind, (presets.builtin_dir(),))
        seen: dict[str, str] = {}
        for path in kind_files(directory, kind + "s"):
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


def preset_entry(loaded: Any, name: str | None, source: str | None) -> dict[str, Any]:
    """A preset entry (plain dict, preset field order) for a model read from disk."""
    spec = loaded.spec
    entry: dict[str, Any] = {
        "name": name or spec.name,
        "display_name": name or spec.display_name or spec.name,
        "source": source or spec.source,
    }
    if spec.aliases:
        entry["aliases"] = list(spec.aliases)
    skip = {"name", "display_name", "source", "aliases"}
    dumped = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name not in skip
              and getattr(spec, f.name) != f.default}
    entry.update({k: list(v) if isinstance(v, tuple) else v for k, v in dumped.items()})
    if spec.vision is not None:  # a vision-language model's image side, as a mapping (presets/models/vision.yaml)
        from dataclasses import asdict

        entry["vision"] = asdict(spec.vision)
    ckpt = loaded.checkpoint
    if ckpt is not None and ckpt.elements == count_params(spec):
        entry["published_parameters"] = ckpt.elements
        entry["published_parameters_source"] = f"safetensors headers of {', '.join(ckpt.files)}"
    return entry




def entry_yaml(entry: dict[str, Any], header: str) -> str:
    """The preset file text for one entry; raises SpecError when the entry would not load back."""
    validate.build(ModelSpec, entry)  # the file we write must load
    return header + yaml.safe_dump([entry], sort_keys=False, allow_unicode=True)
