"""Width pruning (heads and FFN channels) and layer-wise sparsity. Each method registers itself."""

from layerprune.width import magnitude, slimgpt, wanda  # noqa: F401  (registration)
from layerprune.width.base import WIDTH_METHODS, ColumnRequest, register_width_method
from layerprune.width.prune import WidthConfig, WidthResult, width_prune

__all__ = ["WIDTH_METHODS", "ColumnRequest", "WidthConfig", "WidthResult", "register_width_method", "width_prune"]
