"""Magnitude pruning: the data-free unstructured baseline."""

from __future__ import annotations

import torch

from layerprune.width.sparse import SPARSE_PRUNERS, SparseRequest, mask_lowest


@SPARSE_PRUNERS.register("magnitude")
def magnitude(request: SparseRequest) -> torch.Tensor:
    """Zero the weights of smallest ``|W_ij|`` (per output row, or 2 of every 4); no compensation."""
    mask = mask_lowest(request.weight.abs(), request.sparsity, request.pattern)
    return request.weight.masked_fill(mask, 0.0)
