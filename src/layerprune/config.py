"""Building config dataclasses from plain dicts (JSON/YAML recipes) strictly.

Unknown keys are an error that names the valid keys and suggests the closest one, and
values are checked before any expensive work starts (as llm-compressor's parameter models
do). Defaults stay in the dataclasses themselves.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, TypeVar

from layerprune.errors import UserError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Instantiate dataclass ``cls`` from ``data``, recursing into nested dataclass fields."""
    data = {} if data is None else data
    label = where or cls.__name__
    if not isinstance(data, dict):
        raise UserError(f"{label} must be a mapping, got {type(data).__name__}")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown key {key!r} in {label}{hint} Valid keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {key: _convert(hints[key], value, f"{label}.{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise UserError(f"invalid {label}: {error}") from None


def _convert(hint: Any, value: Any, where: str) -> Any:
    nested = _dataclass_in(hint)
    if nested is None or value is None or isinstance(value, nested):
        return value
    return from_dict(nested, value, where)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass in ``hint`` (``X``, ``X | None``), if any."""
    if dataclasses.is_dataclass(hint):
        return hint
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        for member in typing.get_args(hint):
            if dataclasses.is_dataclass(member):
                return member
    return None


def to_dict(config: Any) -> dict[str, Any]:
    """The dataclass as plain JSON-ready data (the resolved config a run directory keeps)."""
    return dataclasses.asdict(config)
