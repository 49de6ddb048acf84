"""Helpers shared by the CLI tests (not a test module)."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from vramcalc import cli


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the console entry point in-process; return (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["vramcalc", *argv]
    try:
        cli.main()
        code: Any = 0
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    # As the interpreter exits: None is 0, an int is itself, anything else (a message) is printed and 1.
    return (code if isinstance(code, int) else 0 if code is None else 1), out, err
