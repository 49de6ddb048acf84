"""A compiled index of the built-in presets: validated once, stored as JSON, reused by every start.

The slow path (YAML + pydantic) parses and validates the preset files; the result is written to
one JSON file in the user's cache directory, keyed by a SHA-256 fingerprint of every input that
shapes it (the preset files, specs.py, cli.py, this module and the package version). A start whose
fingerprint matches reads the JSON (about a millisecond) instead of importing yaml and pydantic.
Any mismatch, unreadable or corrupt cache simply means "build it again"; a cache directory that
cannot be written means "build it in memory each time" (correct, only slower).

Specs in the index are `Record`s: read-only attribute bags holding the already-validated field
values (and the values of the spec classes' properties), hashable like the frozen pydantic models,
so the arithmetic core (which only reads attributes) runs on them unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from vramcalc import __version__

INDEX_FORMAT = 1
CACHE_ENV = "VRAMCALC_CACHE_DIR"
_PACKAGE = Path(__file__).resolve().parent


def normalize(name: str) -> str:
    """Same key as presets.normalize (tested equal): case- and punctuation-insensitive."""
    return re.sub(r"[^a-z0-9.]", "", name.lower()).strip(".")


def builtin_dir() -> Path:
    """Same directory as presets.builtin_dir (tested equal), without importing importlib.resources."""
    packaged = _PACKAGE / "presets"
    return packaged if packaged.is_dir() else _PACKAGE.parents[1] / "presets"


def kind_files(directory: Path, kind: str) -> list[Path]:
    """Preset files of one kind ("models" or "gpus") in a directory: kind/*.yaml, then kind.yaml.

    presets.py reads exactly these (it calls this function), so the index's fingerprint covers them.
    """
    found: list[Path] = []
    sub = directory / kind
    if sub.is_dir():
        found += sorted(p for p in sub.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    for ext in (".yaml", ".yml"):
        single = directory / f"{kind}{ext}"
        if single.is_file():
            found.append(single)
    return found


def preset_files(directory: Path) -> list[Path]:
    """The model and GPU preset files of a directory, in the order presets.py reads them."""
    return kind_files(directory, "models") + kind_files(directory, "gpus")


def fingerprint() -> str:
    """SHA-256 over the package version and the bytes of every input the index depends on."""
    h = hashlib.sha256(f"{INDEX_FORMAT}:{__version__}".encode())
    names = ("specs.py", "cli.py", "presets.py", "render.py", "_index.py", "_fastpath.py")
    sources = [_PACKAGE / n for n in names]
    for path in [*sources, *preset_files(builtin_dir())]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def cache_path() -> Path:
    """$VRAMCALC_CACHE_DIR, else $XDG_CACHE_HOME/vramcalc, else ~/.cache/vramcalc; one JSON file."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vramcalc"
    )
    return Path(base) / "presets-index.json"


def _frozen(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in value.items())
    return value


class Record:
    """A read-only stand-in for a frozen, already-validated spec: attributes, equality and a hash."""

    __slots__ = ("_values", "_hash")

    def __init__(self, values: dict[str, Any]) -> None:
        frozen = {k: _frozen(v) for k, v in values.items()}
        object.__setattr__(self, "_values", frozen)
        object.__setattr__(self, "_hash", hash(tuple(frozen.items())))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Record is read-only")

    def __hash__(self) -> int:
        return self._hash  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self._values == other._values

    def __repr__(self) -> str:
        return f"Record({self._values.get('name', '?')!r})"


def _property_names(cls: type) -> list[str]:
    from pydantic import BaseModel

    names: list[str] = []
    for klass in cls.__mro__:
        if klass is BaseModel:
            break
        names += [k for k, v in vars(klass).items() if isinstance(v, property) and k not in names]
    return names


def _literal_choices(annotation: Any) -> list[Any] | None:
    from typing import Literal, get_args, get_origin

    return list(get_args(annotation)) if get_origin(annotation) is Literal else None


def compile_index() -> dict[str, Any]:
    """Validate the built-in presets with the real loader and return the index document (slow path)."""
    from vramcalc import presets
    from vramcalc.specs import GpuSpec, ModelSpec, TrainingSpec

    dirs = (presets.builtin_dir(),)
    doc: dict[str, Any] = {"format": INDEX_FORMAT}
    for kind, cls in (("model", ModelSpec), ("gpu", GpuSpec)):
        catalog = presets._load(kind, dirs)
        props = _property_names(cls)
        doc[kind + "s"] = {
            getattr(s, "name"): {**s.model_dump(mode="json"), **{p: getattr(s, p) for p in props}}  # noqa: B009
            for s in catalog.specs
        }
        doc[kind + "_keys"] = {k: getattr(s, "name") for k, s in catalog.index.items()}  # noqa: B009
    doc["training_defaults"] = TrainingSpec().model_dump(mode="json")
    doc["training_properties"] = _property_names(TrainingSpec)
    doc["training_choices"] = {
        name: choices
        for name, f in TrainingSpec.model_fields.items()
        if (choices := _literal_choices(f.annotation)) is not None
    }
    from vramcalc._fastpath import probe

    doc.update(probe(doc))  # which outputs the fast path reproduces exactly, checked against Typer
    return doc


def load_index() -> dict[str, Any]:
    """The index for the current inputs: from the cache when its fingerprint matches, else compiled."""
    key = fingerprint()
    path = cache_path()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("fingerprint") == key:
            return doc
    except (OSError, ValueError):
        pass
    doc = compile_index()
    doc["fingerprint"] = key
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(doc), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError:
        pass  # read-only home or cache: still correct, just not cached
    return doc
