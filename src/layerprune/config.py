"""Strict configuration classes: the single home of every default, range and cross-field rule.

Every settings class of layerprune (``CalibrationConfig``, ``MethodConfig``, ``MergeConfig``,
``EvalConfig``, …) is declared with :func:`strict_config`: a pydantic dataclass that forbids unknown
keys, checks types and the ranges given with ``Annotated[..., Field(ge=…)]``, and raises a
:class:`ConfigError` (a :class:`~layerprune.errors.UserError`) that names the key path and
suggests the closest valid key. The recipe schema (:mod:`layerprune.pipeline.recipe`) nests
these same classes, and the CLI builds its flags from their fields, so a default is written once.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any, TypeVar

import pydantic
from pydantic import ConfigDict, ValidationError, ValidationInfo

from layerprune.errors import UserError

T = TypeVar("T")
STRICT = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


class ConfigError(UserError):
    """A settings value that fails the schema: unknown key, wrong type, out of range, exclusive keys."""


def strict_config(cls: type[T]) -> type[T]:
    """Turn ``cls`` into a strict pydantic dataclass whose construction errors are :class:`ConfigError`.

    Values are not coerced between kinds (:func:`reject_coercion`): ``true`` is not 1 and ``"3"`` is not 3.
    """
    cls._no_coercion = pydantic.field_validator("*", mode="before")(reject_coercion)
    strict = pydantic.dataclasses.dataclass(cls, config=STRICT)
    validated_init = strict.__init__

    @functools.wraps(validated_init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            validated_init(self, *args, **kwargs)
        except ValidationError as error:
            raise ConfigError(describe_errors(error, strict)) from None

    strict.__init__ = __init__
    return strict


def reject_coercion(cls: Any, value: Any, info: ValidationInfo) -> Any:
    """A ``field_validator("*", mode="before")``: refuse what pydantic's lax mode would silently convert.

    Lax mode reads ``true`` as 1, ``"3"`` as 3, ``2.0`` as 2 and ``1``/``"yes"`` as ``True``; a recipe
    or a flag that says one of these meant something else, so each is an error naming the field.
    (Full strict mode cannot be used: it also refuses mappings for nested settings sections.)
    """
    field = cls.__pydantic_fields__.get(info.field_name) if info.field_name else None
    kinds = _kinds(field.annotation) if field is not None else set()
    numbers = kinds & {int, float}
    if isinstance(value, bool) and numbers and bool not in kinds:
        raise ValueError("expected a number, not true/false")
    if isinstance(value, str) and not kinds & {str, typing.Literal, Any} and _reads_as(value, kinds):
        raise ValueError(f"expected {'a number' if numbers else 'true or false'}, not a string")
    if isinstance(value, float) and kinds & {int, float, bool} == {int}:
        raise ValueError("expected an integer")
    if isinstance(value, int) and not isinstance(value, bool) and kinds & {int, float, bool} == {bool}:
        raise ValueError("expected true or false")
    return value


def _reads_as(text: str, kinds: set[Any]) -> bool:
    """Whether lax mode would convert ``text`` to one of ``kinds`` (other strings fail with pydantic's own error)."""
    if bool in kinds and text.strip().lower() in _BOOL_WORDS:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return bool(kinds & {int, float})


_BOOL_WORDS = {"0", "1", "true", "false", "yes", "no", "on", "off", "t", "f", "y", "n"}


def _kinds(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (``Annotated`` and unions unwrapped; ``Literal`` kept as itself)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(arg) for arg in typing.get_args(annotation)))
    return {origin or annotation}


def describe_errors(error: ValidationError, schema: Any = None, prefix: str = "") -> str:
    """The first error of ``error`` as one line: ``key.path: what is wrong`` (with a did-you-mean)."""
    first = error.errors()[0]
    path = [str(part) for part in first["loc"] if not str(part).startswith("function-")]
    where = ".".join(filter(None, [prefix, *path]))
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        valid = valid_keys(schema, path[:-1]) if schema is not None else []
        close = difflib.get_close_matches(path[-1], valid, n=1)
        hint = f" — did you mean {'.'.join(filter(None, [prefix, *path[:-1], close[0]]))}?" if close else ""
        listing = f" (valid keys: {', '.join(valid)})" if valid and not close else ""
        return f"unknown key {where}{hint}{listing}"
    message = first["msg"].removeprefix("Value error, ")
    value = first.get("input")
    shown = f" (got {value!r})" if value is not None and not isinstance(value, dict | list) else ""
    return f"{where}: {message}{shown}" if where else f"{message}{shown}"


def valid_keys(schema: Any, path: list[str]) -> list[str]:
    """The field names at ``path`` inside the model/dataclass ``schema`` ([] where unknown)."""
    for part in path:
        schema = _field_type(schema, part)
        if schema is None:
            return []
    return _field_names(schema)


def _field_names(schema: Any) -> list[str]:
    if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        return list(schema.model_fields)
    if dataclasses.is_dataclass(schema):
        return [f.name for f in dataclasses.fields(schema)]
    return []


def _field_type(schema: Any, name: str) -> Any:
    if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
        info = schema.model_fields.get(name)
        annotation = info.annotation if info else None
    elif dataclasses.is_dataclass(schema):
        annotation = schema.__pydantic_fields__[name].annotation if name in schema.__pydantic_fields__ else None
    else:
        return None
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if _field_names(candidate):
            return candidate
    return None
