"""Strict dataclass-from-dict for recipes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from layerprune.config import from_dict, to_dict
from layerprune.errors import UserError


@dataclass
class Inner:
    rate: float = 0.1
    steps: int = 3


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    optional: Inner | None = None


def test_nested_values_override_defaults_and_round_trip():
    config = from_dict(Outer, {"name": "y", "inner": {"steps": 5}, "optional": {"rate": 0.5}})
    assert config == Outer(name="y", inner=Inner(0.1, 5), optional=Inner(0.5, 3))
    assert from_dict(Outer, to_dict(config)) == config


def test_unknown_key_suggests_the_closest():
    with pytest.raises(UserError, match=r"unknown key 'step' in Outer.inner; did you mean 'steps'\?"):
        from_dict(Outer, {"inner": {"step": 2}})


def test_non_mapping_is_rejected():
    with pytest.raises(UserError, match=r"Outer.inner must be a mapping, got int"):
        from_dict(Outer, {"inner": 3})
