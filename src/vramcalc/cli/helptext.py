"""`--help` of every command, laid out for the terminal's width (cli/app.py's command classes call `render`).

Typer's own layout gives each part of an option its column (long name, short name, negation, type, help),
so at 80 columns the names took 41 characters, `--grad-checkpoin…` was cut, a choice list such as
`<auto|bf16|…>` folded inside a word and the help wrapped into 15 characters (issue 12). Here an option
is two columns: its names and metavar (`-o, --output <path>`, `--x/--no-x`, never cut; a flag has no
metavar), and its help, which ends with the choices (`One of: a, b, c.`, unless the help already names
each) and the default. Wrapping is at spaces only, never inside a word. Where the help column would be
narrower than 30 characters (below about 60 columns), the help goes under the names. The panels, colours
and order are Typer's (typer/rich_utils.py).

rich is imported inside the functions (ruff TID253): the fast `estimate` path never loads it.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# typer/rich_utils.py's styles and panel titles
_OPTION, _NEGATIVE, _METAVAR, _DIM = "bold cyan", "bold magenta", "bold yellow", "dim"
ARGUMENTS, OPTIONS, COMMANDS = "Arguments", "Options", "Commands"
_GAP = 2  # spaces between the names and the help
_MIN_HELP = 30  # a narrower help column is unreadable: the help goes under the names instead
_INDENT = 4  # the help under the names
_GLUE = "\u00a0"  # keeps `[default: x]` in one piece (textwrap splits at ASCII whitespace only)


@dataclass(frozen=True)
class _Piece:
    """A part of an option's name cell that is never split: `--method`, `<choice>`, `--x/`."""

    text: str
    style: str
    space: bool = True  # a space before it (none after `--x/`: `--x/--no-x` reads as one)


@dataclass(frozen=True)
class _Row:
    pieces: tuple[_Piece, ...]
    help: str

    @property
    def natural(self) -> int:
        """Width of the names on one line."""
        return sum(len(p.text) + (p.space and i > 0) for i, p in enumerate(self.pieces))


def choices_of(param: Any) -> tuple[str, ...] | None:
    """A parameter's choices (typer >= 0.2x keeps them on its type descriptor, older ones on click's type)."""
    described = getattr(getattr(param, "type_descriptor", None), "choices", None)
    if described is None:
        described = getattr(getattr(param, "type", None), "choices", None)
    return tuple(str(c) for c in described) if described is not None else None


def with_choices(help_text: str, choices: Sequence[str]) -> str:
    """The help, ending with its choices unless it already names each one as a word."""
    if all(re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", help_text) for c in choices):
        return help_text
    listed = f"One of: {', '.join(choices)}."
    if not help_text:
        return listed
    if help_text.rstrip().endswith((".", ")")):
        return f"{help_text} {listed}"
    return f"{help_text}; {listed[:1].lower()}{listed[1:]}"


def render(command: Any, ctx: Any) -> None:
    """Print `command`'s help (usage, description, panels of arguments, options and commands, epilog)."""
    from rich.console import Console

    console = Console(highlight=False)
    width = max(console.width, 8)
    console.print()
    _paragraph(console, command.get_usage(ctx), width, "bold", usage=True)
    console.print()
    description = inspect.cleandoc(command.help or "").partition("\f")[0]
    if description:
        first, _, rest = description.partition("\n\n")
        _paragraph(console, first.replace("\b", ""), width, "")
        for paragraph in rest.split("\n\n"):
            if paragraph.strip():
                console.print()
                for group in _groups(paragraph):
                    _paragraph(console, group, width, _DIM)
        console.print()

    panels: dict[str, list[Any]] = {ARGUMENTS: []}
    option_panels: dict[str, list[Any]] = {OPTIONS: []}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        target = panels if param.param_type_name == "argument" else option_panels
        default = ARGUMENTS if param.param_type_name == "argument" else OPTIONS
        target.setdefault(getattr(param, "rich_help_panel", None) or default, []).append(param)
    rows = {name: [_row(p, ctx) for p in params] for name, params in (*panels.items(), *option_panels.items())}
    names_width, stacked = _layout([r for panel in rows.values() for r in panel], width - 4)
    for name, panel_rows in rows.items():
        if panel_rows:
            lines = [line for r in panel_rows for line in _lines(r, names_width, stacked, width - 4)]
            _print_panel(console, name, lines)

    subcommands = [(n, command.get_command(ctx, n)) for n in getattr(command, "list_commands", lambda _: [])(ctx)]
    subcommands = [(n, c) for n, c in subcommands if c is not None and not c.hidden]
    if subcommands:
        _print_panel(console, COMMANDS, _command_lines(subcommands, width - 4))
    if command.epilog:
        console.print()
        _paragraph(console, command.epilog, width, "")


def _groups(paragraph: str) -> list[str]:
    """A docstring paragraph reflowed, except that a line starting `Example` stays a line of its own."""
    groups: list[str] = []
    for line in paragraph.strip().splitlines():
        if line.startswith("Example") or not groups:
            groups.append(line)
        else:
            groups[-1] += " " + line
    return groups


def _paragraph(console: Any, text: str, width: int, style: str, usage: bool = False) -> None:
    """`text` wrapped at spaces one column in from the left, as Typer indents its prose."""
    from rich.text import Text

    for line in _wrap(" ".join(text.split()), width - 1):
        styled = Text(" " + line, style=style)
        if usage:
            styled.highlight_regex(r"^ Usage: ", "yellow")
        console.print(styled, no_wrap=True, overflow="fold")


def _row(param: Any, ctx: Any) -> _Row:
    """An argument or option as its name pieces and its help sentence(s)."""
    help_text = " ".join((getattr(param, "help", None) or "").split())
    if param.param_type_name == "argument":
        pieces: tuple[_Piece, ...] = (_Piece(param.name or "", _OPTION),)
    else:
        short = [o for o in (*param.opts, *param.secondary_opts) if not o.startswith("--")]
        long_ = [o for o in param.opts if o.startswith("--")]
        negative = [o for o in param.secondary_opts if o.startswith("--")]
        names = [_Piece(f"{s},", _OPTION) for s in short]
        if long_ and negative:  # --x/--no-x, split after the slash only when it must be
            names += [_Piece(f"{long_[0]}/", _OPTION), _Piece(negative[0], _NEGATIVE, space=False)]
        else:
            names += [_Piece(o, _OPTION) for o in long_]
        metavar = None if param.is_flag or getattr(param, "count", False) else _metavar(param, ctx)
        pieces = (*names, *((_Piece(metavar, _METAVAR),) if metavar else ()))
    choices = choices_of(param)
    if choices:
        help_text = with_choices(help_text, choices)
    extra = [f"[default:{_GLUE}{d}]" for d in [_default(param, ctx)] if d]
    if param.required:
        extra.append("[required]")
    return _Row(pieces, " ".join([help_text, *extra]).strip())


def _metavar(param: Any, ctx: Any) -> str:
    """`<choice>` for a choice (the choices are in the help), else Typer's type name (`<int>`)."""
    if param.metavar:
        return str(param.metavar)
    if choices_of(param):
        return "<choice>"
    shown = param.display_type(ctx) if hasattr(param, "display_type") else f"<{param.type.name}>"
    inner = re.fullmatch(r"<list\[(.*)\]>", shown or "")
    return f"<{inner.group(1)}>" if inner else str(shown or "")  # a repeatable option: its help says so


def _default(param: Any, ctx: Any) -> str:
    """The default as the help shows it, or '' (a flag: on or off; an unset option: nothing)."""
    show = getattr(param, "show_default", None)
    if isinstance(show, str):
        return f"({show})"
    if not (show or getattr(ctx, "show_default", False)) or param.param_type_name == "argument":
        return ""
    value = param.default
    if callable(value):
        return "(dynamic)"
    if param.is_flag:
        return ("on" if value else "off") if param.secondary_opts else ""
    if value is None or value == [] or value == ():
        return ""
    return ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(getattr(value, "value", value))


def _layout(rows: Sequence[_Row], content: int) -> tuple[int, bool]:
    """The names column's width, and whether the help goes under the names (too narrow beside them).

    The column is as wide as the longest name that fits on one line in a third of the width (at least
    the longest unbreakable piece): `--x/--no-x` breaks after its slash at 80 columns, not at 120.
    """
    if not rows:
        return 0, False
    longest_piece = max(len(p.text) for r in rows for p in r.pieces)
    cap = max(longest_piece, content // 3)
    names = max([longest_piece, *(r.natural for r in rows if r.natural <= cap)])
    if content - names - _GAP < _MIN_HELP:
        return content, True
    return names, False


def _pack(pieces: Iterable[_Piece], width: int) -> list[list[_Piece]]:
    """The pieces in lines of at most `width` (a piece wider than the line gets a line of its own)."""
    lines: list[list[_Piece]] = [[]]
    used = 0
    for p in pieces:
        gap = 1 if p.space and lines[-1] else 0
        if lines[-1] and used + gap + len(p.text) > width:
            lines.append([])
            used, gap = 0, 0
        lines[-1].append(p)
        used += gap + len(p.text)
    return lines


def _wrap(text: str, width: int) -> list[str]:
    """Lines of at most `width`, broken at spaces only (a word longer than the line is cut, nothing else)."""
    lines = textwrap.wrap(text, max(width, 1), break_on_hyphens=False, break_long_words=True)
    return [line.replace(_GLUE, " ") for line in lines] or [""]


def _lines(row: _Row, names_width: int, stacked: bool, content: int) -> list[Any]:
    from rich.text import Text

    name_lines = _pack(row.pieces, names_width)
    if stacked:
        help_lines = [" " * _INDENT + h for h in _wrap(row.help, content - _INDENT)] if row.help else []
        pairs = [(n, "") for n in name_lines] + [([], h) for h in help_lines]
    else:
        help_lines = _wrap(row.help, content - names_width - _GAP)
        height = max(len(name_lines), len(help_lines))
        pairs = [(name_lines[i] if i < len(name_lines) else [],
                  help_lines[i] if i < len(help_lines) else "") for i in range(height)]
    out = []
    for names, help_line in pairs:
        text = Text(no_wrap=True, overflow="fold")
        for p in names:
            if p.space and len(text):
                text.append(" ")
            text.append(p.text, style=p.style)
        if help_line:
            if not stacked:
                text.append(" " * (names_width + _GAP - len(text)))
            text.append(_styled_help(help_line))
        out.append(text)
    return out


def _styled_help(line: str) -> Any:
    from rich.text import Text

    text = Text(line)
    text.highlight_regex(r"(?<![\w-])--[\w-]+", _OPTION)
    text.highlight_regex(r"\[default: [^\]]*\]", _DIM)
    text.highlight_regex(r"\[required\]", "dim red")
    return text


def _command_lines(commands: Sequence[tuple[str, Any]], content: int) -> list[Any]:
    """A group's commands: name, then the first paragraph of its help (its lines joined)."""
    from rich.text import Text

    names_width = max(len(n) for n, _ in commands)
    stacked = content - names_width - _GAP < 20
    out = []
    for name, cmd in commands:
        first = inspect.cleandoc(cmd.short_help or cmd.help or "").split("\n\n")[0]
        summary = " ".join(first.replace("\b", "").split())
        if stacked:
            out.append(Text(name, style=_OPTION))
            out += [Text(" " * _INDENT + h) for h in _wrap(summary, content - _INDENT)] if summary else []
            continue
        for i, h in enumerate(_wrap(summary, content - names_width - _GAP)):
            text = Text(no_wrap=True, overflow="fold")
            text.append(name.ljust(names_width) if i == 0 else " " * names_width, style=_OPTION)
            text.append(" " * _GAP + h)
            out.append(text)
    return out


def _print_panel(console: Any, title: str, lines: Sequence[Any]) -> None:
    from rich.console import Group
    from rich.panel import Panel

    console.print(Panel(Group(*lines), title=title, title_align="left", border_style=_DIM))
