"""The command line: Typer and rich live here and nowhere else.

`main` is the console entry point. An `estimate` command line is parsed by cli/fast.py (generated from
the same option tables as the Typer app, calling the same function) when it can; everything else, and
any command line fast.py declines, goes to the Typer app (cli/app.py).
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    """Console entry point."""
    from vramcalc.cli.output import ascii_fallback, sane_columns

    sane_columns()  # COLUMNS=0 or junk is unset (rich drew nothing at width 0)
    ascii_fallback()  # an ASCII-only stdout gets x for ×, - | + for box lines, not a UnicodeEncodeError
    try:
        code = _estimate(sys.argv[1:])
        if code is None:
            from vramcalc.cli.app import main as app_main

            app_main()
        else:
            sys.exit(code)
    except BrokenPipeError:  # `vramcalc ... | head -1`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


def _estimate(argv: list[str]) -> int | None:
    """The exit code of an `estimate` command line the fast parser takes; None for any other."""
    if argv[:1] != ["estimate"]:
        return None
    from vramcalc.cli.commands import estimate
    from vramcalc.cli.fast import parse

    parsed = parse(argv[1:], estimate.OWN_OPTIONS)
    if parsed is None:
        return None
    from vramcalc.cli.output import boundary

    with boundary():
        return estimate.run(*parsed)
    return 2  # pragma: no cover - boundary exits
