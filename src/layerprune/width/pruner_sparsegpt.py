"""SparseGPT: one-shot OBS pruning with lazy batch updates (Frantar & Alistarh 2023, arXiv 2301.00774)."""

from __future__ import annotations

import torch

from layerprune.width.obs import damped
from layerprune.width.sparse import SPARSE_PRUNERS, SparseRequest, mask_lowest

BLOCK = 128


@SPARSE_PRUNERS.register("sparsegpt")
def sparsegpt(request: SparseRequest) -> torch.Tensor:
    """Prune columns left to right, each weight's error ``(w − q)/[H⁻¹]_jj`` spread over later columns.

    ``U`` is the upper Cholesky factor of ``H⁻¹`` (damped). Within a block of 128 columns,
    the mask is chosen per output row by ``w² / U_jj²`` (the OBS saliency; for 2:4 per
    group of four, when the group is reached); pruning column ``j`` subtracts
    ``err_j · U_{j, j:}`` from the columns still to come, and the block's errors update the
    columns after it at once (the lazy batch update). The per-row mask of each block
    removes ``round(sparsity · block)`` weights, so every row reaches the target.
    """
    hessian, weight = damped(request.hessian.to(torch.float64), request.weight.to(torch.float64), request.damp)
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    columns = weight.shape[1]
    for start in range(0, columns, BLOCK):
        end = min(start + BLOCK, columns)
        errors = _prune_block(weight, upper, start, end, request)
        weight[:, end:] -= errors @ upper[start:end, end:]
    return weight.to(request.weight.dtype)


sparsegpt.full_hessian = True  # the other pruners need only diag H


def _prune_block(weight: torch.Tensor, upper: torch.Tensor, start: int, end: int, request: SparseRequest):
    """Prune columns ``start:end`` in place; return the scaled errors (out × block)."""
    block = weight[:, start:end]
    diagonal = torch.diagonal(upper)[start:end]
    mask = (
        None
        if request.pattern == "2:4"
        else mask_lowest(block.pow(2) / diagonal.pow(2), request.sparsity, "unstructured")
    )
    errors = torch.zeros_like(block)
    for j in range(end - start):
        if mask is None and j % 4 == 0:
            group = block[:, j : j + 4].pow(2) / diagonal[j : j + 4].pow(2)
            group_mask = mask_lowest(group, 0.5, "2:4")
        column_mask = group_mask[:, j % 4] if mask is None else mask[:, j]
        pruned = block[:, j].masked_fill(column_mask, 0.0)
        errors[:, j] = (block[:, j] - pruned) / diagonal[j]
        block[:, j:] -= errors[:, j : j + 1] @ upper[start + j : start + j + 1, start + j : end]
        block[:, j] = pruned
    return errors
