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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from vramcalc.core.errors import SpecError

Problem = tuple[str, str]  # (field, message); field "" for a rule across fields
T = TypeVar("T")


def problem_text(field: str, message: str) -> str:
    """`field: message`, or the message alone for a rule across fields."""
    return f"{field}: {message}" if field else message


@cache
def _checker(cls: type) -> type[BaseModel]:
    """A pydantic model with the fields, types, choices and bounds of the core dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    spec: dict[str, Any] = {}
    for f in fields(cls):
        annotation: Any = hints[f.name]
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


def build(cls: type[T], data: Any) -> T:
    """The spec `data` describes; its first problem raises SpecError (the caller says where)."""
    spec, problems = check(cls, data)
    if spec is None:
        raise SpecError(*problems[0])
    return spec
