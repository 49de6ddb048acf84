"""Every file vramcalc reads goes through here: regular files only, bounded in size, one-line errors.

A path can name anything: a FIFO (opening it blocks until a writer comes, reading it never ends), a
link to /dev/zero (reads until memory runs out), a directory, a socket. `open_regular` opens with
O_NONBLOCK, so a FIFO cannot block the open, then fstat()s the descriptor it got (not the path, which
could be swapped in between) and refuses whatever is not a regular file or is over the reader's limit.
Every OSError (not found, permission denied, name too long, not a directory) becomes one
PresetFileError naming the file, never a traceback.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from vramcalc.core.errors import PresetFileError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((text for test, text in _KINDS if test(mode)), "not a regular file")


def os_problem(e: OSError, what: str) -> str:
    """One line for an OSError: `cannot read config.json: Permission denied`."""
    reason = e.strerror or type(e).__name__
    if e.errno == errno.ENAMETOOLONG:
        reason = "the name is too long for the file system"
    return f"cannot read {what}: {reason}"


@contextmanager
def open_regular(path: str | Path, max_bytes: int, what: str) -> Iterator[tuple[BinaryIO, int]]:
    """(binary file, size) of a regular file of at most `max_bytes`; anything else is PresetFileError."""
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise PresetFileError(p, [os_problem(e, what)]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PresetFileError(p, [f"{what} is {_kind(info.st_mode)}, not a regular file; pass a file"])
        if info.st_size > max_bytes:
            raise PresetFileError(
                p, [f"{what} is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit; is it the right file?"]
            )
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        try:
            yield f, info.st_size
        except OSError as e:
            raise PresetFileError(p, [os_problem(e, what)]) from None


def read_bounded(path: str | Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (checked again while reading: it may grow)."""
    with open_regular(path, max_bytes, what) as (f, _size):
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise PresetFileError(str(path), [f"{what} grew past the {max_bytes:,}-byte limit while being read"])
    return data


def read_text_bounded(path: str | Path, max_bytes: int, what: str) -> str:
    """`read_bounded` decoded as UTF-8 (a BOM is dropped); not UTF-8 is one PresetFileError."""
    try:
        return read_bounded(path, max_bytes, what).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PresetFileError(str(path), [f"{what} is not UTF-8 text"]) from None


def path_kind(path: str | Path, what: str) -> str:
    """"file", "dir", "missing" or "other", following links; an OSError other than not-found is one error.

    Path.is_file() and exists() raise on a name over 255 bytes or a folder that cannot be searched.
    """
    try:
        mode = os.stat(str(path)).st_mode
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return "missing"
        raise PresetFileError(str(path), [os_problem(e, what)]) from None
    except ValueError:  # an embedded NUL byte
        raise PresetFileError(repr(str(path)), [f"{what}: a path cannot contain a NUL byte"]) from None
    return "file" if stat.S_ISREG(mode) else "dir" if stat.S_ISDIR(mode) else "other"
