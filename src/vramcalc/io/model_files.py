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
from vramcalc.io.files import open_regular, path_kind, read_text_bounded
from vramcalc.io.hf_config import hf_config_notes, spec_from_hf_config

MAX_CONFIG_BYTES = 5_000_000  # config.json is a few kB; refuse anything that is not
MAX_INDEX_BYTES = 32_000_000  # model.safetensors.index.json: ~100 bytes per tensor name
# The safetensors library allows a 100 MB header, but parsing one costs ~25 s and 1 GB in Python; a
# header entry is ~150 bytes per tensor, so 25 MB still holds an unsharded checkpoint of ~150k tensors.
MAX_HEADER_BYTES = 25_000_000
MAX_SAFETENSORS_FILE_BYTES = 2**50  # only the header is read; the file itself may be any real size

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


def _read_json(path: Path, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """A JSON document from a bounded regular file; invalid, too deep or non-finite JSON is one error."""
    text = read_text_bounded(path, max_bytes, what)
    return parse_json(text, str(path), what)


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for `expected X, got Y` messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def parse_json(text: str, source: str, what: str) -> Any:
    """json.loads refusing NaN/Infinity and numbers that overflow a float (1e309), and deep nesting."""
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise PresetFileError(source, [f"line {e.lineno}: invalid JSON: {e.msg}"]) from None
    except RecursionError:
        raise PresetFileError(source, [f"{what} is nested too deeply to be a {what}"]) from None
    except ValueError as e:  # the two refusals above; an integer of more than 4,300 digits
        raise PresetFileError(source, [f"{what}: invalid JSON: {' '.join(str(e).split()[:10])}"]) from None


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of one .safetensors file (tensor name -> dtype, shape, data_offsets)."""
    p = str(path)
    with open_regular(path, MAX_SAFETENSORS_FILE_BYTES, "the safetensors file") as (f, size):
        raw = f.read(8)
        if len(raw) < 8:
            raise PresetFileError(p, ["not a safetensors file: shorter than its 8-byte header length"])
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise PresetFileError(p, [f"not a safetensors file: header length {n} is impossible: longer than the file"])
        if n > MAX_HEADER_BYTES:
            raise PresetFileError(p, [f"safetensors header of {n:,} bytes is over the {MAX_HEADER_BYTES:,}-byte "
                                      "limit (about 150 bytes a tensor); is it a safetensors file?"])
        body = f.read(n)
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PresetFileError(p, ["not a safetensors file: the header is not UTF-8 JSON"]) from None
    try:
        header = parse_json(text, p, "safetensors header")
    except PresetFileError as e:
        raise PresetFileError(p, [f"not a safetensors file: the header is not JSON ({e.problems[0]})"]) from None
    if not isinstance(header, dict):
        raise PresetFileError(p, ["not a safetensors file: the header is not a JSON object"])
    return header


MAX_TENSOR_RANK = 32  # safetensors itself sets none; real tensors have at most 5 or 6 dimensions
MAX_DIM = 2**63 - 1  # a dimension is a u64 in the format; beyond i64 no framework can hold it


def count_header(header: dict[str, Any], path: str) -> tuple[dict[str, int], int]:
    """(elements per dtype, tensor count) of one header; "__metadata__" is skipped.

    Each entry is checked as the format defines it (dtype one of the Dtype names, shape a list of
    non-negative integers); a problem is `tensor NAME: field: what is wrong`.
    """
    by_dtype: dict[str, int] = {}
    tensors = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        where = f"tensor {name!r:.80}"
        if not isinstance(info, dict):
            raise PresetFileError(path, [f"{where}: expected an object with dtype and shape, got {json_type(info)}"])
        dtype, shape = info.get("dtype"), info.get("shape")
        if dtype is None or shape is None:
            raise PresetFileError(path, [f"{where} has no dtype or shape in the header"])
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_BYTES:
            raise PresetFileError(path, [f"{where}: dtype: {dtype!r:.40} is not a safetensors dtype; expected one of "
                                         + ", ".join(SAFETENSORS_DTYPE_BYTES)])
        if not isinstance(shape, list) or len(shape) > MAX_TENSOR_RANK:
            raise PresetFileError(path, [f"{where}: shape: expected a list of at most {MAX_TENSOR_RANK} integers, "
                                         f"got {json_type(shape)}"])
        n = 1
        for dim in shape:
            if isinstance(dim, bool) or not isinstance(dim, int) or not 0 <= dim <= MAX_DIM:
                raise PresetFileError(path, [f"{where}: shape: {dim!r:.30} is not a dimension (a non-negative "
                                             "integer)"])
            n *= dim
        by_dtype[dtype] = by_dtype.get(dtype, 0) + n
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
    if path_kind(index, "model.safetensors.index.json") != "missing":
        data = _read_json(index, "model.safetensors.index.json", MAX_INDEX_BYTES)
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(weight_map, dict):
            raise PresetFileError(str(index), ["no weight_map: not a safetensors index"])
        meta = data.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise PresetFileError(str(index), [f"metadata: expected a JSON object, got {json_type(meta)}"])
        size = (meta or {}).get("total_size")
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise PresetFileError(str(index), [f"metadata.total_size: expected a byte count, got {size!r:.40}"])
            total_bytes = size
        for tensor, shard in weight_map.items():
            if not isinstance(shard, str) or not shard or "/" in shard or "\\" in shard or shard in (".", ".."):
                raise PresetFileError(str(index), [f"weight_map.{tensor}: expected a file name in this folder, "
                                                   f"got {shard!r:.60}"])
        shards = sorted(set(weight_map.values()))
        present = [folder / s for s in shards if path_kind(folder / s, s) != "missing"]
        if len(present) == len(shards):
            return read_checkpoint(present), total_bytes, notes
        notes.append(
            f"{len(shards) - len(present)} of {len(shards)} shards listed in "
            "model.safetensors.index.json are not here; the parameter count comes from config.json."
        )
        return None, total_bytes, notes
    single = folder / "model.safetensors"
    if path_kind(single, "model.safetensors") != "missing":
        return read_checkpoint([single]), None, notes
    return None, None, notes


def load_model_path(path: str | Path) -> LoadedModel:
    """A model from a config.json file or a folder holding one (and safetensors files, when present)."""
    p = Path(path)
    kind = path_kind(p, "the model path")
    if kind == "dir":
        folder, config_path = p, p / "config.json"
        if path_kind(config_path, "config.json") == "missing":
            raise PresetFileError(
                str(p), ["no config.json in this folder; pass a Hugging Face model folder or its config.json"]
            )
    elif kind == "missing":
        raise PresetFileError(str(p), ["no such file or folder"])
    else:  # a file, or something read_bounded refuses with the reason
        folder, config_path = p.parent, p
    config = _read_json(config_path, "config.json")
    if not isinstance(config, dict):
        raise PresetFileError(str(config_path), ["config.json is not a JSON object"])
    name = (folder.resolve().name if kind == "dir" or p.name == "config.json" else p.stem).lower() or "model"
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
