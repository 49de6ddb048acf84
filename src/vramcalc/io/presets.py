"""Preset files: the only module that reads files. YAML via safe_load, validated by pydantic."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar, cast

from vramcalc.core.errors import AmbiguousPresetError, PresetFileError, UnknownPresetError
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


class Catalog:
    """All presets of one kind, looked up by normalized name and alias.

    Specs are built on first use (a lookup builds one spec, not the catalog: the start-up of `estimate`).
    """

    def __init__(self, kind: str, make: dict[str, Callable[[], Any]], keys: dict[str, str]) -> None:
        self.kind = kind  # "model" or "gpu"
        self._make = make  # name -> builds the spec
        self._keys = keys  # normalized name or alias -> name
        self._built: dict[str, Any] = {}

    def _spec(self, name: str) -> Any:
        if name not in self._built:
            self._built[name] = self._make[name]()
        return self._built[name]

    def get(self, key: str) -> Any:
        """The spec a normalized key names, or None."""
        name = self._keys.get(key)
        return None if name is None else self._spec(name)

    def keys(self) -> list[str]:
        return list(self._keys)

    def key_names(self) -> dict[str, str]:
        return dict(self._keys)

    def names(self) -> list[str]:
        return list(self._make)

    @property
    def specs(self) -> tuple[Any, ...]:
        return tuple(self._spec(n) for n in self._make)


def _build(kind: str, entries: Iterable[tuple[Any, str]]) -> Catalog:
    by_name: dict[str, tuple[Any, str]] = {}
    for spec, path in entries:
        key = normalize(spec.name)
        # A later directory (user presets) overrides an earlier one; duplicates within one file set error.
        if key in by_name and by_name[key][1] == path:
            raise PresetFileError(path, [f"duplicate {kind} name {spec.name!r}"])
        by_name[key] = (spec, path)
    specs = [s for s, _ in by_name.values()]
    keys: dict[str, str] = {}
    for spec in specs:
        for alias in spec.aliases:
            keys[normalize(alias)] = spec.name
            if "/" in alias:
                keys.setdefault(normalize(alias.rsplit("/", 1)[1]), spec.name)
    for spec in specs:
        keys[normalize(spec.name)] = spec.name  # names win over aliases
    return Catalog(kind, {s.name: (lambda s=s: s) for s in specs}, keys)


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

    def value(k: str, v: Any) -> Any:
        if k == "vision" and isinstance(v, dict):  # a vision-language model's VisionSpec (asdict made it a dict)
            from vramcalc.core.specs import VisionSpec

            return VisionSpec(**v)
        return tuple(v) if isinstance(v, list) else v

    def maker(fields: dict[str, Any]) -> Callable[[], Any]:
        # the core's own checks run again on what the cache holds
        return lambda: cls(**{k: value(k, v) for k, v in fields.items()})

    return Catalog(kind, {name: maker(fields) for name, fields in doc[kind + "s"].items()}, doc[kind + "_keys"])


def compile_index() -> dict[str, Any]:
    """The built-in presets validated by the real loader, as plain data: {kinds: {name: fields}, kind_keys}."""
    from dataclasses import asdict

    payload: dict[str, Any] = {}
    for kind in ("model", "gpu"):
        catalog = load_files(kind, (builtin_dir(),))
        payload[kind + "s"] = {s.name: asdict(s) for s in catalog.specs}
        payload[kind + "_keys"] = catalog.key_names()
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
    hit = catalog.get(key)
    if hit is not None:
        return hit
    import difflib

    names = catalog.key_names()
    close = difflib.get_close_matches(key, list(names), n=8, cutoff=0.6)
    suggestions = list(dict.fromkeys(names[k] for k in close))[:3]
    raise UnknownPresetError(catalog.kind, name, suggestions)


def find_model(name: str, extra_dirs: Iterable[str | Path] = ()) -> ModelSpec:
    """A model preset by name, alias or Hugging Face id."""
    return cast(ModelSpec, find(models(extra_dirs), name))


# GPU names that exist in more than one memory size: a bare name must not silently pick one.
AMBIGUOUS_GPUS: dict[str, tuple[str, ...]] = {
    "a100": ("a100-40gb", "a100-80gb"),
    "nvidiaa100": ("a100-40gb", "a100-80gb"),
}
# What nvidia-smi / rocm-smi print before the model ("NVIDIA GeForce RTX 4090", "NVIDIA H100 80GB HBM3",
# "AMD Instinct MI250X"), normalized; stripped when the full name is not itself a preset.
_VENDOR_PREFIXES = ("nvidiageforce", "nvidiaquadro", "nvidia", "amdinstinct", "amdradeon", "amd", "geforce")
_MEMORY_SIZE = re.compile(r"^\s*\d+(\.\d+)?\s*(g|gb|gib|m|mb|mib|t|tb|tib)\s*$", re.IGNORECASE)


def find_gpu(name: str, extra_dirs: Iterable[str | Path] = ()) -> GpuSpec:
    """A GPU preset by name or alias, or by the name nvidia-smi / rocm-smi print.

    A name that fits several sizes (`a100`) is an error listing them; a memory size (`24gb`) is an error
    pointing to --max-memory.
    """
    catalog = gpus(extra_dirs)
    key = normalize(name)
    hit = catalog.get(key)
    if hit is not None:
        return cast(GpuSpec, hit)
    if key in AMBIGUOUS_GPUS:
        raise AmbiguousPresetError("gpu", name, AMBIGUOUS_GPUS[key])
    if _MEMORY_SIZE.match(name):
        raise UnknownPresetError("gpu", name, []).with_hint(
            f"--gpu takes a GPU name (see: vramcalc gpus); for a memory budget use --max-memory {name.strip()}")
    for prefix in _VENDOR_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            rest = key[len(prefix):]
            hit = catalog.get(rest)
            if hit is not None:
                return cast(GpuSpec, hit)
            if rest in AMBIGUOUS_GPUS:
                raise AmbiguousPresetError("gpu", name, AMBIGUOUS_GPUS[rest])
    return cast(GpuSpec, find(catalog, name))
