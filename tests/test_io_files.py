"""Every reader reads regular files only, bounded in size, and turns any OS error into one line (issue 19).

The hostile path kinds are generated (hypothesis) and crossed with every reader in io/: a FIFO must not
block, a link to /dev/zero must not be read, a directory, a socket, an oversized file, a name over 255
bytes and a path through a file are each one PresetFileError naming the file, never a hang or a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vramcalc.core.errors import PresetFileError, VramcalcError
from vramcalc.io import index, model_files, presets, runfiles
from vramcalc.io.files import path_kind, read_bounded

KINDS = ("fifo", "dev-zero-link", "directory", "socket", "oversize", "name-too-long", "through-a-file")


@contextmanager
def deadline(seconds: int = 5) -> Iterator[None]:
    """Fail (instead of hanging the suite) when a read blocks."""

    def _hang(*_: Any) -> None:
        raise AssertionError(f"the read did not return within {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, _hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def make(kind: str, where: Path, name: str, oversize: int) -> Path:
    """A path of the hostile `kind` named `name` in `where` (created fresh)."""
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero-link":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "oversize":
        with path.open("wb") as f:
            f.truncate(oversize)  # sparse: no disk used
    elif kind == "name-too-long":
        path = where / ("x" * 300 + name)
    elif kind == "through-a-file":
        (where / "plain").write_text("x")
        path = where / "plain" / name
    return path


def _cache_reader(path: Path) -> Any:
    assert index._read_cache(path, "key") is None  # not ours: rebuilt, never a hang or an error
    raise PresetFileError(str(path), ["refused"])


def _safetensors(path: Path) -> Any:
    return model_files.read_safetensors_header(path)


READERS: dict[str, tuple[str, int, Callable[[Path], Any]]] = {
    # reader: (file name, its size limit, the call)
    "preset": ("models.yaml", presets.MAX_PRESET_FILE_BYTES, presets.read_yaml),
    "config.json": ("config.json", model_files.MAX_CONFIG_BYTES, model_files.load_model_path),
    "run file": ("run.yaml", presets.MAX_PRESET_FILE_BYTES, lambda p: runfiles.load(str(p))),
    "index cache": ("presets-index.json", index.MAX_INDEX_BYTES, _cache_reader),
    "model index": ("model.safetensors.index.json", model_files.MAX_INDEX_BYTES,
                    lambda p: model_files._checkpoint_of(p.parent)),
}


# the model index has a fixed name in its folder: a long name or a path through a file is not its case
CASES = [(r, k) for r in sorted(READERS) for k in KINDS
         if not (r == "model index" and k in ("name-too-long", "through-a-file"))]


@pytest.mark.parametrize(("reader", "kind"), CASES)
@settings(derandomize=True, max_examples=3, database=None)
@given(extra=st.integers(1, 10**9))
def test_every_reader_refuses_what_is_not_a_small_regular_file(
    tmp_path_factory: pytest.TempPathFactory, reader: str, kind: str, extra: int
) -> None:
    name, limit, call = READERS[reader]
    where = tmp_path_factory.mktemp("hostile")
    path = make(kind, where, name, limit + extra)
    with deadline():
        with pytest.raises(VramcalcError) as caught:
            call(path)
    message = str(caught.value)
    assert "\n" not in message and message


@pytest.mark.parametrize("kind", KINDS)
def test_read_bounded_says_what_the_path_is(tmp_path: Path, kind: str) -> None:
    path = make(kind, tmp_path, "f.yaml", 11)
    with deadline(), pytest.raises(PresetFileError) as caught:
        read_bounded(path, 10, "the file")
    expected = {"fifo": "FIFO", "dev-zero-link": "character device", "directory": "directory",
                "socket": "cannot read", "oversize": "over the 10-byte limit",
                "name-too-long": "too long", "through-a-file": "Not a directory"}[kind]
    assert expected in str(caught.value)


def test_unsearchable_folder_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root searches any folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "config.json").write_text("{}")
    locked.chmod(0)
    try:
        with pytest.raises(PresetFileError, match="Permission denied"):
            path_kind(locked / "config.json", "config.json")
    finally:
        locked.chmod(0o700)


def test_fifo_in_a_preset_folder_is_refused_not_waited_on(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    os.mkfifo(tmp_path / "models" / "a.yaml")
    with deadline(), pytest.raises(PresetFileError, match="FIFO"):
        presets.load_files("model", (tmp_path,))


def test_a_95_mb_safetensors_header_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    n = 95_000_000
    with path.open("wb") as f:
        f.write(struct.pack("<Q", n))
        f.truncate(8 + n + 16)  # sparse
    with deadline(1), pytest.raises(PresetFileError, match="over the 25,000,000-byte limit"):
        model_files.read_safetensors_header(path)


def test_index_shard_names_stay_in_the_folder(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "/dev/zero"}}))
    with pytest.raises(PresetFileError, match="weight_map.w: expected a file name in this folder"):
        model_files._checkpoint_of(tmp_path)


def test_a_name_over_255_bytes_is_not_a_model_path() -> None:
    from vramcalc.io.resolve import looks_like_path

    with pytest.raises(PresetFileError, match="too long"):
        looks_like_path("m" * 300)
