"""What a MODEL reference names, the same in every command: a file or folder on disk, else a preset.

Light: the config.json reader (io/model_files.py) is imported only when the reference is a path.
"""

from __future__ import annotations

import os.path
from collections.abc import Iterable
from pathlib import Path

from vramcalc.core.errors import PresetFileError
from vramcalc.core.specs import ModelSpec
from vramcalc.io.files import path_kind


def looks_like_path(model: str, exists: bool = True) -> bool:
    """MODEL is read from disk when it names an existing file or folder (with `exists`), ends in .json or
    starts like a path (./ ../ / ~)."""
    return (model.endswith(".json") or model.startswith(("./", "../", "/", "~", ".\\"))
            or (exists and path_kind(model, "MODEL") != "missing"))


def resolve_model(ref: str, base_dir: Path | None = None,
                  extra_dirs: Iterable[str | Path] = ()) -> tuple[ModelSpec, tuple[str, ...]]:
    """What MODEL names, the same in every command: an existing file or folder (relative to `base_dir`, a
    run file's folder, first), else a preset name / alias / Hugging Face id; with the reader's notes.

    A path wins over a preset of the same name (a clone of another model called `mistral-7b/` in the
    working directory is what the user points at), and the notes say so. A reference that looks like a
    path (ends in .json, starts with ./ ../ / or ~) but does not exist is an error naming the path.
    """
    from vramcalc.core.errors import UnknownPresetError, VramcalcError
    from vramcalc.io import presets

    # os.path.expanduser leaves ~nobody as given (Path.expanduser raises RuntimeError)
    for candidate in ([base_dir / ref] if base_dir is not None else []) + [Path(os.path.expanduser(ref))]:
        if path_kind(candidate, "MODEL") != "missing":
            from vramcalc.io.model_files import load_model_path  # the reader, only for a path

            loaded = load_model_path(candidate)
            notes = loaded.notes
            if not looks_like_path(ref, exists=False) and presets.models(extra_dirs).get(presets.normalize(ref)):
                notes = (f"{ref!r} is a file or folder here and also a preset name: read {candidate} "
                         "(pass the preset from another directory to use it)", *notes)
            return loaded.spec, notes
    if looks_like_path(ref, exists=False):
        raise PresetFileError(ref, ["no such file or folder; pass a config.json, a model folder holding one, "
                                    "or a preset name (see: vramcalc models)"])
    try:
        return presets.find_model(ref, extra_dirs), ()
    except UnknownPresetError as e:
        if "/" in ref and not e.suggestions:
            raise VramcalcError(
                f"model {ref!r} is a Hugging Face hub id with no preset and vramcalc works offline; download its "
                "config.json and pass its path (MODEL or `model:` ./config.json), or add a preset (see: vramcalc "
                "models)") from None
        raise
