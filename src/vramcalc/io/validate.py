"""Untrusted data (preset files, config.json, run files) into core specs, with one error formatter.

pydantic checks each field's type with the core's own choices and bounds (core/specs.py declares them
once: CHOICES, BOUNDS, LENGTHS), reporting every bad field at once in its standard words; then the core
dataclass is built, and its `__post_init__` checks the cross-field rules. Either way a problem is a
`(field, message)` pair, turned into text by `problem_text` only.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import MISSING, fields
from functools import cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictStr, ValidationError, create_model

from vramcalc.core.errors import SpecError

Problem = tuple[str, str]  # (field, message); field "" for a rule across fields
T = TypeVar("T")


def problem_text(field: str, message: str) -> str:
    """`field: message`, or the message alone for a rule across fields."""
    return f"{field}: {message}" if field else message


# Types of the raw keys of a foreign file (config.json) before any arithmetic touches them. JSON has
# one number type and strings that look like anything, so each kind is strict: a boolean is true or
# false (never "false", which Python's bool() reads as true), an integer is not a boolean, a string or
# a fraction, a number is finite. Each kind allows null (the key's default applies).
def _not_bool_or_text(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise ValueError(f"Input should be a number, not {'a boolean' if isinstance(value, bool) else 'a string'}")
    return value


_StrictNumber = BeforeValidator(_not_bool_or_text)

@cache
def _checker(cls: type) -> type[BaseModel]:
    """A pydantic model with the fields, types, choices and bounds of the core dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    spec: dict[str, Any] = {}
    for f in fields(cls):
        annotation: Any = hints[f.name]
        if annotation is bool:  # true/false only: pydantic's lax mode would read "y", "on" or 1 as true
            annotation = StrictBool
        elif annotation is int:  # and True as 1
            annotation = Annotated[int, _StrictNumber]
        elif annotation == int | None:
            annotation = Annotated[int, _StrictNumber] | None
        elif annotation is float:  # and "1" as 1.0 (a preset's moe_capacity_factor: "1" was accepted)
            annotation = Annotated[float, _StrictNumber]
        elif annotation == float | None:
            annotation = Annotated[float, _StrictNumber] | None
        if f.name in cls.CHOICES:  # type: ignore[attr-defined]
            annotation = Literal[cls.CHOICES[f.name]]  # type: ignore[attr-defined]
            if f.name in cls.OPTIONAL:  # type: ignore[attr-defined]
                annotation = annotation | None
        constraints: dict[str, Any] = dict(cls.BOUNDS.get(f.name, ()))  # type: ignore[attr-defined]
        if f.name in cls.LENGTHS:  # type: ignore[attr-defined]
            constraints["min_length"], constraints["max_length"] = cls.LENGTHS[f.name]  # type: ignore[attr-defined]
        if constraints:
            annotation = Annotated[annotation, Field(**constraints)]
        default = ... if f.default is MISSING and f.default_factory is MISSING else (
            f.default if f.default is not MISSING else f.default_factory())
        spec[f.name] = (annotation, default)
    return create_model(f"{cls.__name__}Fields", __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
                        **spec)


def check(cls: type[T], data: Any) -> tuple[T | None, list[Problem]]:
    """The spec `data` describes, or None and every problem found (type and bound problems all at once)."""
    if not isinstance(data, Mapping):
        return None, [("", f"expected a mapping of fields, got {type(data).__name__}")]
    try:
        checked = _checker(cls).model_validate(dict(data))
    except ValidationError as e:
        return None, [(".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, "))
                      for err in e.errors()]
    except RecursionError:
        return None, [("", "nested too deeply")]
    try:
        return cls(**{f.name: getattr(checked, f.name) for f in fields(cls)}), []  # type: ignore[call-arg]
    except SpecError as e:
        return None, [(e.field, e.message)]


KEY_KINDS: dict[str, Any] = {
    "int": Annotated[int, _StrictNumber, Field(ge=0)],
    "positive": Annotated[int, _StrictNumber, Field(gt=0)],
    "number": Annotated[float, _StrictNumber, Field(allow_inf_nan=False)],
    "bool": StrictBool,
    "str": StrictStr,
    "int_list": list[Annotated[int, _StrictNumber, Field(ge=0)]],
    "str_list": list[StrictStr],
    "object": dict[str, Any],
}


@cache
def _key_checker(kinds: tuple[tuple[str, str], ...]) -> type[BaseModel]:
    spec: dict[str, Any] = {key: (KEY_KINDS[kind] | None, None) for key, kind in kinds}
    return create_model("KeyFields", __config__=ConfigDict(extra="allow"), **spec)


def check_keys(kinds: Mapping[str, str], data: Mapping[str, Any]) -> list[Problem]:
    """Type problems of the keys of `data` named in `kinds` (key -> a KEY_KINDS name); other keys pass."""
    present = {k: data[k] for k in kinds if k in data}
    try:
        _key_checker(tuple(sorted(kinds.items()))).model_validate(present)
    except ValidationError as e:
        return [(".".join(str(p) for p in err["loc"]),
                 f"{err['msg'].removeprefix('Value error, ')}, got {_shown(err.get('input'))}")
                for err in e.errors()]
    return []


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def build(cls: type[T], data: Any) -> T:
    """The spec `data` describes; its first problem raises SpecError (the caller says where)."""
    spec, problems = check(cls, data)
    if spec is None:
        raise SpecError(*problems[0])
    return spec
