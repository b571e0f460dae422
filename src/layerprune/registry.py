"""Name → object registries with checked registration, in the manner of peft's tuner registry.

Metrics, merge operators, healing methods and presets each keep one :class:`Registry`.
Registration checks that the name is lowercase, unique and documented; lookup of an
unknown name raises a :class:`~layerprune.errors.UserError` that lists the valid names and
suggests the closest one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from layerprune.errors import UserError

T = TypeVar("T")
_NAME = re.compile(r"^[a-z0-9][a-z0-9+\-_.]*$")


class Registry(Generic[T]):
    """A checked mapping from lowercase names to registered objects (functions or classes)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; the object must carry a docstring."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        if not _NAME.match(name):
            raise ValueError(f"{self.kind} name {name!r} must be lowercase letters, digits, '+', '-', '_' or '.'")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if not (getattr(obj, "__doc__", None) or "").strip():
            raise ValueError(f"{self.kind} {name!r} needs a docstring that states what it computes")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self._entries, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid: {', '.join(sorted(self._entries))}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)
