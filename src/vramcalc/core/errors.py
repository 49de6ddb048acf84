"""Domain errors. Each renders as one line that names the problem and then the fix."""

from __future__ import annotations

from collections.abc import Sequence


def printable(text: str) -> str:
    """`text` with every non-printable character escaped as repr() writes it (`\\n`, `\\x1b`, `\\u202e`).

    Names and values in messages come from input files: a newline would split the one-line error, an
    ESC sequence would drive the terminal, a bidi override would reorder what is shown.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class VramcalcError(Exception):
    """Base class: the CLI turns any of these into `error: <message>` and exit code 2.

    Every message is one printable line: string arguments pass through `printable`, so a subclass
    cannot echo a file's control characters raw.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(printable(a) if isinstance(a, str) else a for a in args))


class SpecError(VramcalcError):
    """A spec field (or, with field "", a combination of fields) that fails its check.

    The CLI names the option (`--batch-size: ...`); io/ names the file entry and field.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = printable(field), printable(message)
        super().__init__(f"{field}: {message}" if field else message)


class UnknownPresetError(VramcalcError):
    """A model or GPU name that matches no preset, with the closest names."""

    def __init__(self, kind: str, name: str, suggestions: Sequence[str]) -> None:
        self.kind, self.name, self.suggestions = kind, name, list(suggestions)
        if suggestions:
            hint = "did you mean " + ", ".join(repr(s) for s in suggestions) + "?"
        else:
            hint = "no close match"
        listing = "vramcalc models" if kind == "model" else "vramcalc gpus"
        super().__init__(f"unknown {kind} {name!r}; {hint} (see: {listing})")

    def with_hint(self, hint: str) -> UnknownPresetError:
        """The same error with `hint` in place of the suggestions."""
        self.args = (f"unknown {self.kind} {self.name!r}: {hint}",)
        return self


class AmbiguousPresetError(VramcalcError):
    """A name that could mean more than one preset (`a100`: 40 or 80 GB): the user must choose."""

    def __init__(self, kind: str, name: str, choices: Sequence[str]) -> None:
        self.kind, self.name, self.choices = kind, name, list(choices)
        super().__init__(f"{kind} {name!r} is ambiguous: choose one of {', '.join(choices)}")


class PresetFileError(VramcalcError):
    """A preset or config file that cannot be read or does not validate."""

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path, self.problems = printable(path), [printable(p) for p in problems]
        first = self.problems[0] if problems else "invalid"
        more = f" (+{len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"{self.path}: {first}{more}")


class UnsupportedCombination(VramcalcError):
    """Options that are individually valid but cannot be combined."""


class BadInput(VramcalcError):
    """An input problem found by a command itself (a missing model, a list too long): one line, exit 2."""
