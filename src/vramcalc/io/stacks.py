"""Training stacks as data: presets/stacks/<name>.yaml, each a stack's defaults for the run options.

A stack preset names the library file and version it was read from (`source`, `version`), the option
values that stack uses unless told otherwise (`options`, each with the file that sets it in `sources`),
the memory savers it offers (`offers`: option -> values; `fit` names the stacks that offer a saver) and
what vramcalc does not model of it (`notes`). OptionValues applies `options` under the run file and the
command line (core/options.py). Validated with pydantic; every problem is reported as `field: msg`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from vramcalc.core.errors import PresetFileError
from vramcalc.core.options import BY_NAME, OptionError, coerce
from vramcalc.core.vocab import STACKS
from vramcalc.io.index import builtin_dir

# Options a stack may not set: what it is, and the run's shape that the user or the run file gives.
NOT_STACK_OPTIONS = frozenset({"stack", "mode", "method", "batch_size", "grad_accum", "gpus_per_node", "nodes",
                               "context"})


@dataclass(frozen=True)
class Stack:
    """One stack preset, validated: its defaults, where each comes from, the savers it offers."""

    name: str
    display_name: str
    source: str
    version: str
    options: dict[str, Any]
    sources: dict[str, str]
    offers: dict[str, tuple[Any, ...]]
    notes: tuple[str, ...]


def stacks_dir() -> Path:
    return builtin_dir() / "stacks"


def stack_options(name: str) -> dict[str, Any]:
    """The option defaults of stack `name` (OptionValues' resolver)."""
    return dict(find_stack(name).options)


def find_stack(name: str) -> Stack:
    """The stack preset `name` (one of core.vocab.STACKS), read and validated once."""
    if name not in STACKS:
        raise OptionError(f"--stack: {name!r} is not one of {', '.join(STACKS)}")
    return _load(name)


def all_stacks() -> tuple[Stack, ...]:
    return tuple(find_stack(n) for n in STACKS)


def offering(option: str, value: Any) -> tuple[str, ...]:
    """The stacks whose preset offers `option` = `value` (a saver), in STACKS order."""
    return tuple(s.name for s in all_stacks() if value in s.offers.get(option, ()))


@cache
def _load(name: str) -> Stack:
    from vramcalc.io.presets import read_yaml

    path = stacks_dir() / f"{name}.yaml"
    data = read_yaml(path)
    return parse_stack(data, str(path), name)


def parse_stack(data: Any, path: str, name: str | None = None) -> Stack:
    """A Stack from a preset's parsed YAML; PresetFileError lists every problem as `field: msg`."""
    from pydantic import BaseModel, ConfigDict, ValidationError

    class _StackFile(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        name: str
        display_name: str
        source: str
        version: str
        options: dict[str, Any]
        sources: dict[str, str]
        offers: dict[str, list[Any]]
        notes: list[str]

    try:
        raw = _StackFile.model_validate(data)
    except ValidationError as e:
        fields = [f"{'.'.join(map(str, err['loc'])) or 'file'}: {err['msg']}" for err in e.errors()]
        raise PresetFileError(path, fields) from None
    problems: list[str] = []
    if raw.name not in STACKS or (name is not None and raw.name != name):
        problems.append(f"name: {raw.name!r} must be the file's name, one of {', '.join(STACKS)}")
    if not raw.source.startswith("https://"):
        problems.append("source: give the https URL of the library file the defaults were read from")
    options: dict[str, Any] = {}
    for key, value in raw.options.items():
        if key not in BY_NAME or key in NOT_STACK_OPTIONS:
            problems.append(f"options.{key}: not an option a stack sets")
            continue
        try:
            options[key] = coerce(BY_NAME[key], value)
        except OptionError as e:
            problems.append(f"options.{key}: {str(e).split(': ', 1)[-1]}")
        if key not in raw.sources:
            problems.append(f"options.{key}: no entry in sources (the library file that sets it)")
    problems += [f"sources.{k}: not in options" for k in raw.sources if k not in raw.options]
    offers: dict[str, tuple[Any, ...]] = {}
    for key, values in raw.offers.items():
        if key not in BY_NAME or key in NOT_STACK_OPTIONS:
            problems.append(f"offers.{key}: not an option")
            continue
        try:
            offers[key] = tuple(coerce(BY_NAME[key], v) for v in values)
        except OptionError as e:
            problems.append(f"offers.{key}: {str(e).split(': ', 1)[-1]}")
    if problems:
        raise PresetFileError(path, problems)
    return Stack(raw.name, raw.display_name, raw.source, raw.version, options, dict(raw.sources), offers,
                 tuple(raw.notes))


def stack_notes(training: Any) -> list[str]:
    """The notes of the run's stack (what it does that is not modelled), for Breakdown.notes."""
    if getattr(training, "stack", "hf") == "hf":
        return []
    return list(find_stack(training.stack).notes)
