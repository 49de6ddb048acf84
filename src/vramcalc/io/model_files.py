"""Reading a model from disk without loading weights: config.json, a model folder, safetensors headers.

The safetensors format (huggingface/safetensors, docs "Format"): an 8-byte little-endian unsigned
header length N, then N bytes of JSON mapping each tensor name to {dtype, shape, data_offsets}
(plus an optional "__metadata__" of strings), then the raw data. Only the header is read, so a
140 GB checkpoint costs a few kilobytes of I/O. Sharded checkpoints list their files in
model.safetensors.index.json ("weight_map": tensor -> file, "metadata": {"total_size": bytes}).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vramcalc.core.errors import PresetFileError
from vramcalc.core.specs import ModelSpec
from vramcalc.io.hf_config import hf_config_notes, spec_from_hf_config

MAX_CONFIG_BYTES = 5_000_000  # config.json and index files are small; refuse anything that is not
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit on the header (100 MB)

# Bytes per element of each safetensors dtype (safetensors Dtype enum).
SAFETENSORS_DTYPE_BYTES: dict[str, float] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
    "F4": 0.5,
    "F6_E2M3": 0.75,
    "F6_E3M2": 0.75,
    "C64": 8,
}
TORCH_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass(frozen=True)
class Checkpoint:
    """What the safetensors headers say: element counts per dtype and the files read."""

    elements_by_dtype: dict[str, int]
    files: tuple[str, ...]
    tensors: int

    @property
    def elements(self) -> int:
        return sum(self.elements_by_dtype.values())


@dataclass(frozen=True)
class LoadedModel:
    """A model read from disk: its spec, the checkpoint's own count when present, and notes."""

    spec: ModelSpec
    config: dict[str, Any]
    checkpoint: Checkpoint | None = None
    index_total_bytes: int | None = None
    notes: tuple[str, ...] = field(default=())


def _read_json(path: Path, what: str) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise PresetFileError(str(path), [f"{what} is {size} bytes; expected a small JSON file"])
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PresetFileError(str(path), [f"cannot read {what}: {e.strerror or e}"]) from None
    except UnicodeDecodeError:
        raise PresetFileError(str(path), [f"{what} is not UTF-8 text"]) from None
    except json.JSONDecodeError as e:
        raise PresetFileError(str(path), [f"line {e.lineno}: invalid JSON: {e.msg}"]) from None


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of one .safetensors file (tensor name -> dtype, shape, data_offsets)."""
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise PresetFileError(
                    str(path), ["not a safetensors file: shorter than its 8-byte header length"]
                )
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_HEADER_BYTES or n > path.stat().st_size - 8:
                raise PresetFileError(str(path), [f"not a safetensors file: header length {n} is impossible"])
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as e:
        raise PresetFileError(str(path), [f"cannot read: {e.strerror or e}"]) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PresetFileError(str(path), ["not a safetensors file: the header is not JSON"]) from None
    if not isinstance(header, dict):
        raise PresetFileError(str(path), ["not a safetensors file: the header is not a JSON object"])
    return header


def count_header(header: dict[str, Any], path: str) -> tuple[dict[str, int], int]:
    """(elements per dtype, tensor count) of one header; "__metadata__" is skipped."""
    by_dtype: dict[str, int] = {}
    tensors = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or "shape" not in info or "dtype" not in info:
            raise PresetFileError(path, [f"tensor {name!r} has no dtype or shape in the header"])
        n = 1
        for dim in info["shape"]:
            n *= int(dim)
        by_dtype[str(info["dtype"])] = by_dtype.get(str(info["dtype"]), 0) + n
        tensors += 1
    return by_dtype, tensors


def read_checkpoint(files: Iterable[Path]) -> Checkpoint:
    """Element counts over every header of a (possibly sharded) checkpoint."""
    total: dict[str, int] = {}
    names: list[str] = []
    tensors = 0
    for path in files:
        by_dtype, n = count_header(read_safetensors_header(path), str(path))
        for k, v in by_dtype.items():
            total[k] = total.get(k, 0) + v
        tensors += n
        names.append(path.name)
    return Checkpoint(dict(sorted(total.items())), tuple(names), tensors)


def _checkpoint_of(folder: Path) -> tuple[Checkpoint | None, int | None, list[str]]:
    """Headers of the folder's safetensors files, via the index when there is one."""
    notes: list[str] = []
    index = folder / "model.safetensors.index.json"
    total_bytes: int | None = None
    if index.is_file():
        data = _read_json(index, "model.safetensors.index.json")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise PresetFileError(str(index), ["no weight_map: not a safetensors index"])
        meta = data.get("metadata") or {}
        if isinstance(meta, dict) and isinstance(meta.get("total_size"), int):
            total_bytes = meta["total_size"]
        shards = sorted({str(v) for v in weight_map.values()})
        present = [folder / s for s in shards if (folder / s).is_file()]
        if len(present) == len(shards):
            return read_checkpoint(present), total_bytes, notes
        notes.append(
            f"{len(shards) - len(present)} of {len(shards)} shards listed in "
            "model.safetensors.index.json are not here; the parameter count comes from config.json."
        )
        return None, total_bytes, notes
    single = folder / "model.safetensors"
    if single.is_file():
        return read_checkpoint([single]), None, notes
    return None, None, notes


def load_model_path(path: str | Path) -> LoadedModel:
    """A model from a config.json file or a folder holding one (and safetensors files, when present)."""
    p = Path(path)
    if p.is_dir():
        folder, config_path = p, p / "config.json"
        if not config_path.is_file():
            raise PresetFileError(
                str(p), ["no config.json in this folder; pass a Hugging Face model folder or its config.json"]
            )
    elif p.is_file():
        folder, config_path = p.parent, p
    else:
        raise PresetFileError(str(p), ["no such file or folder"])
    config = _read_json(config_path, "config.json")
    if not isinstance(config, dict):
        raise PresetFileError(str(config_path), ["config.json is not a JSON object"])
    name = (folder.resolve().name if p.is_dir() or p.name == "config.json" else p.stem).lower() or "model"
    spec = spec_from_hf_config(config, name[:100], str(config_path))
    notes = hf_config_notes(config)
    checkpoint, total_bytes, more = _checkpoint_of(folder)
    notes += more
    if checkpoint is not None:
        notes += _compare(spec, checkpoint)
    elif total_bytes is not None:
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
        if dtype in TORCH_DTYPE_BYTES:
            notes.append(
                f"model.safetensors.index.json total_size {total_bytes:,} bytes / "
                f"{TORCH_DTYPE_BYTES[dtype]} ({dtype}) = about {total_bytes // TORCH_DTYPE_BYTES[dtype]:,} "
                "parameters stored (approximate: the index gives bytes, not dtypes)."
            )
    return LoadedModel(spec, config, checkpoint, total_bytes, tuple(notes))


def _compare(spec: ModelSpec, ckpt: Checkpoint) -> list[str]:
    from vramcalc.core.params import count_params

    derived = count_params(spec)
    dtypes = ", ".join(f"{k} {v:,}" for k, v in ckpt.elements_by_dtype.items())
    if ckpt.elements == derived:
        return [
            f"safetensors headers: {ckpt.elements:,} parameters ({dtypes}), the same as the architecture."
        ]
    return [
        f"safetensors headers hold {ckpt.elements:,} elements ({dtypes}) in {ckpt.tensors} tensors; the "
        f"architecture gives {derived:,} (difference {ckpt.elements - derived:+,}: a tied head stored twice, "
        "extra modules or quantization scales). The estimate uses the architecture."
    ]
