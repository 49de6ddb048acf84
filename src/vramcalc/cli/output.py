"""Output for every command: errors as one line, json/yaml/csv, and a terminal writer. Light: no Typer, no rich."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

OutFormat = Literal["table", "json", "yaml", "csv", "markdown"]


def one_line(e: BaseException) -> str:
    """A spec check as `--flag: msg` (the option's own flag); anything else with its whitespace collapsed."""
    from vramcalc.core.errors import SpecError

    if isinstance(e, SpecError) and e.field:
        from vramcalc.core.options import BY_NAME

        name = e.field
        flag = BY_NAME[name].flag if name in BY_NAME else "--" + name.replace("_", "-")  # --gpus for gpus_per_node
        return f"{flag}: {' '.join(e.message.split())}"
    return " ".join(str(e).split())


def echo(text: str = "", err: bool = False, nl: bool = True) -> None:
    """Write text to stdout (or stderr) as typer.echo does, without importing Typer."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + ("\n" if nl else ""))
    stream.flush()


@contextmanager
def boundary() -> Iterator[None]:
    """The one error boundary: a VramcalcError becomes `error: <problem>; <fix>` on stderr and exit 2.

    The Typer app's group (cli/app.py) and the fast front end (cli/__init__.py) both run commands in it.
    """
    from vramcalc.core.errors import VramcalcError

    try:
        yield
    except VramcalcError as e:
        raise fail(e) from None
    except BrokenPipeError:
        raise  # the reader left (`| head -1`): cli/__init__.py main exits quietly
    except OSError as e:  # the readers report these; this is the net: a path the CLI touched on its own
        where = f"{e.filename}: " if e.filename is not None else ""
        raise fail(OSError(f"{where}{e.strerror or e}")) from None


def fail(e: BaseException) -> SystemExit:
    """Print `error: <problem>; <fix>` on stderr and return the exit-2 to raise."""
    echo(f"error: {one_line(e)}", err=True)
    return SystemExit(2)


def emit(doc: Mapping[str, Any], fmt: str) -> None:
    """JSON (json.dumps, byte-exact) or YAML of a document on stdout."""
    if fmt == "json":
        echo(json.dumps(doc, indent=2))
    else:
        from vramcalc.io.formats import yaml_text

        echo(yaml_text(doc), nl=False)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with a header; booleans as true/false, None as empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [
                "" if r.get(c) is None else str(r[c]).lower() if isinstance(r.get(c), bool) else r[c]
                for c in columns
            ]
        )
    return buf.getvalue()


def console(no_color: bool = False) -> Any:
    """rich Console for stdout; colour off with --no-color, NO_COLOR, or when stdout is not a terminal."""
    from rich.console import Console

    return Console(no_color=no_color or bool(os.environ.get("NO_COLOR")) or None, highlight=False)


def uses_colour(con: Any) -> bool:
    return bool(con.is_terminal and not con.no_color and con.color_system is not None)


# ---- the terminal, without rich: the estimate report prints through these (cli/fast.py needs no rich) ----

_SGR = {"bold": "1", "dim": "2", "black": "30", "red": "31", "green": "32", "yellow": "33", "blue": "34",
        "magenta": "35", "cyan": "36", "white": "37", "bright_black": "90", "bright_red": "91",
        "bright_green": "92", "bright_yellow": "93", "bright_blue": "94", "bright_magenta": "95",
        "bright_cyan": "96", "bright_white": "97"}


MAX_COLUMNS = 1_000  # a wider COLUMNS is junk: rules and bars would be drawn that wide


def sane_columns(environ: dict[str, str] | Any = os.environ) -> None:
    """COLUMNS that is not a positive integer (0, junk) is unset: rich would draw at width 0, i.e. nothing."""
    columns = environ.get("COLUMNS")
    if columns is None:
        return
    if not (columns.isascii() and columns.isdigit() and int(columns) > 0):
        del environ["COLUMNS"]
    elif int(columns) > MAX_COLUMNS:
        environ["COLUMNS"] = str(MAX_COLUMNS)


# What the report prints beyond ASCII, for a stream that cannot encode it (PYTHONIOENCODING=ascii, a
# latin-1 terminal): a plain rendering rather than a UnicodeEncodeError; anything else becomes `?`.
_ASCII = {"×": "x", "·": "-", "§": "S", "→": ">", "←": "<", "≥": ">=", "≤": "<=", "−": "-", "÷": "/",
          "★": "*", "—": "-", "³": "^3", "²": "^2", "▼": "v", "√": "sqrt", "π": "pi", "…": "...", "•": "*"}


def _ascii_table() -> dict[int, str]:
    import unicodedata

    table = {ord(k): v for k, v in _ASCII.items()}
    for code in range(0x2500, 0x2580):  # box drawing: lines by direction, corners and joints as +
        name = unicodedata.name(chr(code), "")
        across, down = "HORIZONTAL" in name, "VERTICAL" in name
        table[code] = "-" if across and not down else "|" if down and not across else "+"
    for code in range(0x2580, 0x25A0):  # blocks (the memory bars)
        table[code] = "#"
    return table


class _AsciiStream:
    """A text stream that writes what its encoding lacks as ASCII (× as x, box lines as - | +)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._table = _ascii_table()

    def write(self, text: str) -> int:
        enc = self._stream.encoding or "ascii"
        return self._stream.write(text.translate(self._table).encode(enc, "replace").decode(enc))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def ascii_fallback() -> None:
    """Wrap sys.stdout and sys.stderr in _AsciiStream when their encoding cannot write the report."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            "×·━".encode(stream.encoding or "ascii")
        except (LookupError, UnicodeEncodeError):
            setattr(sys, name, _AsciiStream(stream))
        except AttributeError:  # no stream (pythonw) or no encoding: leave it
            continue


def terminal_width(environ: Mapping[str, str] = os.environ) -> int:
    """Columns as rich's Console counts them: the terminal's size, COLUMNS overriding, else 80."""
    width = 0
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
        except (AttributeError, ValueError, OSError):
            continue
        break
    columns = environ.get("COLUMNS", "")
    if columns.isascii() and columns.isdigit() and int(columns) > 0:
        width = min(int(columns), MAX_COLUMNS)
    return width or 80


def colour_wanted(no_color: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """Colour on a terminal (or FORCE_COLOR), off with --no-color, NO_COLOR or TERM=dumb."""
    if no_color or environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    if environ.get("FORCE_COLOR"):
        return True
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def styled(text: str, style: str, colour: bool) -> str:
    """`text` in SGR escape codes for a space-separated style ("bold red"), or plain."""
    codes = [_SGR[w] for w in style.split() if w in _SGR] if colour else []
    return f"\x1b[{';'.join(codes)}m{text}\x1b[0m" if codes and text else text


def print_lines(lines: Iterable[Sequence[tuple[str, str]]], colour: bool) -> None:
    """Print lines of (text, style) segments (render.report_lines), coloured or plain."""
    echo("".join("".join(styled(text, style, colour) for text, style in line) + "\n" for line in lines), nl=False)
