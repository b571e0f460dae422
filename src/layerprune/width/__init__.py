"""Width pruning (heads and FFN channels) and layer-wise sparsity. Each method registers itself."""

from layerprune.width import (  # noqa: F401  (registration)
    allocation_alpha,
    allocation_dsa,
    allocation_owl,
    allocation_uniform,
    magnitude,
    pruner_magnitude,
    pruner_sparsegpt,
    pruner_wanda,
    slimgpt,
    wanda,
)
from layerprune.width.base import WIDTH_METHODS, ColumnRequest, register_width_method
from layerprune.width.prune import WidthConfig, WidthResult, width_prune
from layerprune.width.sparse import ALLOCATIONS, SPARSE_PRUNERS
from layerprune.width.sparsify import SparsifyConfig, SparsifyResult, sparsify

__all__ = [
    "ALLOCATIONS",
    "SPARSE_PRUNERS",
    "WIDTH_METHODS",
    "ColumnRequest",
    "SparsifyConfig",
    "SparsifyResult",
    "WidthConfig",
    "WidthResult",
    "register_width_method",
    "sparsify",
    "width_prune",
]
