"""Wanda: pruning by weights and activations (Sun et al. 2023, arXiv 2306.11695)."""

from __future__ import annotations

import torch

from layerprune.width.sparse import SPARSE_PRUNERS, SparseRequest, mask_lowest, wanda_scores


@SPARSE_PRUNERS.register("wanda")
def wanda(request: SparseRequest) -> torch.Tensor:
    """Zero the lowest ``S_ij = |W_ij| · ‖X_j‖₂`` in each output row (or 2 of every 4); no compensation."""
    mask = mask_lowest(wanda_scores(request.weight, torch.diagonal(request.hessian)), request.sparsity, request.pattern)
    return request.weight.masked_fill(mask, 0.0)
