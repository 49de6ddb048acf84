"""Preset files: the only module that reads files. YAML via safe_load, validated by pydantic."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

from vramcalc.core.errors import PresetFileError, UnknownPresetError
from vramcalc.core.specs import GpuSpec, ModelSpec
from vramcalc.io.files import path_kind
from vramcalc.io.index import builtin_dir, kind_files, normalize

ENV_VAR = "VRAMCALC_PRESETS"
MAX_PRESET_FILE_BYTES = 2_000_000  # presets are small; refuse anything that is not

Spec = TypeVar("Spec", ModelSpec, GpuSpec)


def read_yaml(path: Path) -> Any:
    """Parse one YAML (or JSON) file with safe_load; size-bounded; errors name the file and line."""
    from vramcalc.io.files import read_text_bounded

    text = read_text_bounded(path, MAX_PRESET_FILE_BYTES, "the file")
    import yaml

    try:
        data = yaml.load(text, Loader=strict_loader())  # noqa: S506 - a SafeLoader subclass, never yaml.Loader
    except DuplicateKeyError as e:
        raise PresetFileError(str(path), [str(e)]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise PresetFileError(str(path), [f"{line}invalid YAML: {e.problem}"]) from None
    except (yaml.YAMLError, RecursionError) as e:
        raise PresetFileError(str(path), [f"invalid YAML: {type(e).__name__}"]) from None
    except ValueError as e:  # an integer of more than 4,300 digits (sys.set_int_max_str_digits)
        raise PresetFileError(str(path), [f"invalid YAML: {' '.join(str(e).split()[:8])}"]) from None
    _check_shape(data, str(path))
    return data


class DuplicateKeyError(Exception):
    """A mapping that gives one key twice (YAML says keys are unique; PyYAML keeps the last silently)."""


@lru_cache(maxsize=1)
def strict_loader() -> Any:
    """yaml's safe loader (libyaml's when built with it), with two YAML 1.1 surprises removed.

    - A key given twice in one mapping is an error, not "the last one wins".
    - Integers are YAML 1.2's: `1:30` (1.1 sexagesimal, 90) and `010` (1.1 octal, 8) stay strings, so
      validation says "not an integer" instead of accepting a number the author did not write.
    """
    import re

    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it: ~10x faster

    class StrictLoader(base):  # type: ignore[misc, valid-type]
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base constructor reports it
                    continue
                if duplicate:
                    raise DuplicateKeyError(f"line {key_node.start_mark.line + 1}: key {key!r:.60} is given twice "
                                            "in one mapping; keep one")
            return super().construct_mapping(node, deep=deep)

    resolvers = {first: [(tag, rx) for tag, rx in entries
                         if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
                 for first, entries in base.yaml_implicit_resolvers.items()}
    StrictLoader.yaml_implicit_resolvers = resolvers
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?(?:0|[1-9][0-9_]*))$"),
        list("-+0123456789"),
    )
    StrictLoader.add_implicit_resolver(  # the 1.1 float pattern less its sexagesimal branch
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."),
    )
    return StrictLoader


MAX_PRESET_DEPTH = 16  # a preset list is 3 levels deep (list, entry, aliases)
MAX_PRESET_VALUES = 100_000  # after YAML aliases are expanded; all shipped files hold ~1,700


def _check_shape(data: Any, path: str) -> None:
    """Bound nesting and size as pydantic will see them: aliases (&a / *a) can make a 1 kB file expand
    to billions of values ("billion laughs"), which safe_load builds cheaply by reference."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_PRESET_VALUES:
            too_many = f"more than {MAX_PRESET_VALUES:,} values once YAML aliases are expanded"
            raise PresetFileError(path, [too_many])
        if depth > MAX_PRESET_DEPTH:
            raise PresetFileError(path, [f"nested deeper than {MAX_PRESET_DEPTH} levels"])
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list | tuple | set):
            stack.extend((v, depth + 1) for v in node)


def parse_specs(data: Any, kind: type[Spec], path: str) -> list[Spec]:
    """Validate a list of preset entries; every problem is reported as `entry N (name): field: msg`."""
    if data is None:
        raise PresetFileError(path, ["file is empty: expected a list of presets"])
    if not isinstance(data, list):
        raise PresetFileError(path, [f"expected a list of presets, got {type(data).__name__}"])
    from vramcalc.io import validate

    specs: list[Spec] = []
    problems: list[str] = []
    for i, entry in enumerate(data):
        spec, found = validate.check(kind, entry)
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"entry {i + 1}" + (f" ({name})" if isinstance(name, str) and name else "")
        problems += [f"{where}: {validate.problem_text(*p)}" for p in found]
        if spec is not None:
            specs.append(spec)
    if problems:
        raise PresetFileError(path, problems)
    return specs


@dataclass(frozen=True)
class Catalog:
    """All presets of one kind, indexed by normalized name and alias."""

    kind: str  # "model" or "gpu"
    specs: tuple[Any, ...]
    index: dict[str, Any]

    def names(self) -> list[str]:
        return [getattr(s, "name") for s in self.specs]  # noqa: B009 - Any has no `name` attribute


def _build(kind: str, entries: Iterable[tuple[Any, str]]) -> Catalog:
    by_name: dict[str, tuple[Any, str]] = {}
    for spec, path in entries:
        key = normalize(getattr(spec, "name"))  # noqa: B009
        # A later directory (user presets) overrides an earlier one; duplicates within one file set error.
        if key in by_name and by_name[key][1] == path:
            raise PresetFileError(path, [f"duplicate {kind} name {getattr(spec, 'name')!r}"])  # noqa: B009
        by_name[key] = (spec, path)
    specs = tuple(s for s, _ in by_name.values())
    index: dict[str, Any] = {}
    for spec in specs:
        for alias in getattr(spec, "aliases"):  # noqa: B009
            index[normalize(alias)] = spec
            if "/" in alias:
                index.setdefault(normalize(alias.rsplit("/", 1)[1]), spec)
    for spec in specs:
        index[normalize(getattr(spec, "name"))] = spec  # names win over aliases  # noqa: B009
    return Catalog(kind, specs, index)


_session_dirs: tuple[Path, ...] = ()


def use_dirs(dirs: Iterable[str | Path]) -> None:
    """Set the --presets directories of this invocation (the CLI calls this once per command)."""
    global _session_dirs
    _session_dirs = tuple(Path(d) for d in dirs)


def preset_dirs(extra: Iterable[str | Path] = ()) -> tuple[Path, ...]:
    """Built-in presets, then VRAMCALC_PRESETS (os.pathsep-separated), then --presets directories."""
    extra = tuple(extra) or _session_dirs
    dirs = [builtin_dir()]
    env = os.environ.get(ENV_VAR, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += [Path(p) for p in extra]
    for d in dirs[1:]:
        if path_kind(d, "the preset directory") != "dir":
            raise PresetFileError(str(d), ["preset directory not found: pass a directory holding models/*.yaml "
                                           "or gpus.yaml"])
    return tuple(dirs)


@lru_cache(maxsize=8)
def load_files(kind: str, dirs: tuple[Path, ...]) -> Catalog:
    """The catalog of one kind read from the preset files of `dirs` (YAML + validation: the slow path)."""
    entries: list[tuple[Any, str]] = []
    for d in dirs:
        for path in kind_files(d, kind + "s"):
            data = read_yaml(path)
            specs: list[ModelSpec] | list[GpuSpec] = (
                parse_specs(data, ModelSpec, str(path)) if kind == "model" else parse_specs(data, GpuSpec, str(path)))
            entries += [(spec, str(path)) for spec in specs]
    return _build(kind, entries)


@lru_cache(maxsize=2)
def _builtin(kind: str) -> Catalog:
    """The built-in catalog from the compiled index (io/index.py): no YAML, no pydantic."""
    from vramcalc.io.index import load_index

    doc = load_index(compile_index)
    cls = ModelSpec if kind == "model" else GpuSpec
    specs = {name: cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
             for name, fields in doc[kind + "s"].items()}
    return Catalog(kind, tuple(specs.values()), {k: specs[n] for k, n in doc[kind + "_keys"].items()})


def compile_index() -> dict[str, Any]:
    """The built-in presets validated by the real loader, as plain data: {kinds: {name: fields}, kind_keys}."""
    from dataclasses import asdict

    payload: dict[str, Any] = {}
    for kind in ("model", "gpu"):
        catalog = load_files(kind, (builtin_dir(),))
        payload[kind + "s"] = {s.name: asdict(s) for s in catalog.specs}
        payload[kind + "_keys"] = {k: s.name for k, s in catalog.index.items()}
    return payload


def _load(kind: str, dirs: tuple[Path, ...]) -> Catalog:
    return _builtin(kind) if dirs == (builtin_dir(),) else load_files(kind, dirs)


def models(extra_dirs: Iterable[str | Path] = ()) -> Catalog:
    """The model catalog (built-in plus user directories)."""
    return _load("model", preset_dirs(extra_dirs))


def gpus(extra_dirs: Iterable[str | Path] = ()) -> Catalog:
    """The GPU catalog (built-in plus user directories)."""
    return _load("gpu", preset_dirs(extra_dirs))


def find(catalog: Catalog, name: str) -> Any:
    """Look a preset up by name or alias; unknown names get the closest suggestions."""
    key = normalize(name)
    hit = catalog.index.get(key)
    if hit is not None:
        return hit
    close = difflib.get_close_matches(key, list(catalog.index), n=8, cutoff=0.6)
    suggestions = list(dict.fromkeys(getattr(catalog.index[k], "name") for k in close))[:3]  # noqa: B009
    raise UnknownPresetError(catalog.kind, name, suggestions)


def find_model(name: str, extra_dirs: Iterable[str | Path] = ()) -> ModelSpec:
    """A model preset by name, alias or Hugging Face id."""
    return cast(ModelSpec, find(models(extra_dirs), name))


def find_gpu(name: str, extra_dirs: Iterable[str | Path] = ()) -> GpuSpec:
    """A GPU preset by name or alias."""
    return cast(GpuSpec, find(gpus(extra_dirs), name))
