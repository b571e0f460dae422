"""Uniform allocation: every layer gets the target sparsity."""

from __future__ import annotations

from layerprune.width.sparse import ALLOCATIONS, AllocationContext


@ALLOCATIONS.register("uniform")
def uniform(context: AllocationContext) -> list[float]:
    """``S_l = S`` for every layer."""
    return [context.target] * len(context.weights)
