"""The width-method registry: how a method chooses which heads or channels of a layer go.

A width method is a function ``(request: ColumnRequest) -> (removed, weight)``. It sees one
output projection (``o_proj`` for heads, ``down_proj`` for channels), the Hessian of its
calibration inputs ``H = 2XXᵀ/N``, and the candidate column groups (one row per KV group or
channel); it returns the indices of the ``count`` groups to remove and the projection's
new weight (compensated, or unchanged for methods without compensation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from layerprune.registry import Registry


@dataclass
class ColumnRequest:
    """What a width method decides on: remove ``count`` of the column ``groups`` (G × m) of ``weight``."""

    weight: torch.Tensor
    hessian: torch.Tensor
    groups: torch.Tensor
    count: int
    kind: str  # "heads" or "channels"
    damp: float = 0.01
    head_score: str = "released"  # SlimGPT's head score: "released" or "exact" (see layerprune.width.obs)
    channel_batches: str = "released"  # SlimGPT's channel batches: "released" or "halving"


WidthMethod = Callable[[ColumnRequest], tuple[list[int], torch.Tensor]]
WIDTH_METHODS: Registry[WidthMethod] = Registry("width method")


def register_width_method(name: str) -> Callable[[WidthMethod], WidthMethod]:
    return WIDTH_METHODS.register(name)


def lowest(scores: torch.Tensor, count: int) -> list[int]:
    """Indices of the ``count`` smallest scores (ties broken by index)."""
    return torch.argsort(scores, stable=True)[:count].tolist()
