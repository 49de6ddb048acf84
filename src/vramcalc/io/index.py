"""A compiled index of the built-in presets: validated once, stored as JSON, reused by every start.

The slow path (YAML + pydantic, io/presets.py) parses and validates the preset files; the result is
written to one JSON file in the user's cache directory, keyed by a SHA-256 fingerprint of every input
that shapes it (the preset files, the spec and reader modules and the package version). A start whose
fingerprint matches reads the JSON (about a millisecond) instead of importing yaml and pydantic, and
builds the core's own spec dataclasses from it, whose checks run again: an edited cache cannot smuggle
in a spec the files would not give. The document also carries a digest of its payload; any mismatch,
unreadable or corrupt cache means "build it again"; a cache directory that cannot be written means
"build it in memory each time" (correct, only slower). Plain data: nothing here imports the CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vramcalc import __version__

INDEX_FORMAT = 2
CACHE_ENV = "VRAMCALC_CACHE_DIR"
MAX_INDEX_BYTES = 8_000_000  # the built-in index is ~150 kB; anything far larger is not ours
_PACKAGE = Path(__file__).resolve().parents[1]  # the vramcalc package
# The modules whose code shapes the index: the specs, the choices, and the readers that build it.
_SOURCES = ("core/specs.py", "core/vocab.py", "io/index.py", "io/presets.py", "io/validate.py")


def normalize(name: str) -> str:
    """Lookup key: case- and punctuation-insensitive ('Mistral 7B' == 'mistral-7b' == 'MISTRAL_7b')."""
    return re.sub(r"[^a-z0-9.]", "", name.lower()).strip(".")


def builtin_dir() -> Path:
    """The shipped presets: inside the installed package, else the repository's top-level presets/."""
    packaged = _PACKAGE / "presets"
    return packaged if packaged.is_dir() else _PACKAGE.parents[1] / "presets"


def kind_files(directory: Path, kind: str) -> list[Path]:
    """Preset files of one kind ("models" or "gpus") in a directory: kind/*.yaml, then kind.yaml.

    presets.py reads exactly these (it calls this function), so the index's fingerprint covers them.
    """
    from vramcalc.core.errors import PresetFileError
    from vramcalc.io.files import os_problem, path_kind

    found: list[Path] = []
    sub = directory / kind
    if path_kind(sub, "the preset folder") == "dir":
        try:
            found += sorted(p for p in sub.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        except OSError as e:
            raise PresetFileError(str(sub), [os_problem(e, "the preset folder")]) from None
    for ext in (".yaml", ".yml"):
        single = directory / f"{kind}{ext}"
        if path_kind(single, "the preset file") != "missing":  # not a regular file: read_yaml says so
            found.append(single)
    return found


def preset_files(directory: Path) -> list[Path]:
    """The model and GPU preset files of a directory, in the order presets.py reads them."""
    return kind_files(directory, "models") + kind_files(directory, "gpus")


def fingerprint() -> str:
    """SHA-256 over the package version and the bytes of every input the index depends on."""
    h = hashlib.sha256(f"{INDEX_FORMAT}:{__version__}".encode())
    for path in [*(_PACKAGE / n for n in _SOURCES), *preset_files(builtin_dir())]:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def cache_path() -> Path:
    """$VRAMCALC_CACHE_DIR, else $XDG_CACHE_HOME/vramcalc, else ~/.cache/vramcalc; one JSON file."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vramcalc"
    )
    return Path(base) / "presets-index.json"


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str) -> dict[str, Any] | None:
    """The cached payload when the file is ours, current and unedited; None otherwise."""
    from vramcalc.core.errors import VramcalcError
    from vramcalc.io.files import read_bounded

    try:  # a FIFO, a device, a directory or an oversized file here is "not ours": rebuild
        doc = json.loads(read_bounded(path, MAX_INDEX_BYTES, "the preset index cache"))
    except (VramcalcError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or doc.get("fingerprint") != key or not isinstance(doc.get("payload"), dict):
        return None
    payload: dict[str, Any] = doc["payload"]
    return payload if doc.get("digest") == _digest(payload) else None


_memory: dict[str, dict[str, Any]] = {}


def load_index(compile_index: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The index payload for the current inputs: from the cache when current, else `compile_index()` (cached)."""
    key = fingerprint()
    if key in _memory:
        return _memory[key]
    path = cache_path()
    payload = _read_cache(path, key)
    if payload is None:
        payload = compile_index()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"fingerprint": key, "digest": _digest(payload), "payload": payload}),
                           encoding="utf-8")
            os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the new one
        except OSError:
            pass  # read-only home or cache: still correct, built in memory for this process
    _memory[key] = payload
    return payload
