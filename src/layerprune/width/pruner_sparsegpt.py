"""SparseGPT: one-shot OBS pruning with lazy batch updates (Frantar & Alistarh 2023, arXiv 2301.00774)."""

from __future__ import annotations

import torch

from layerprune.width.obs import damped
from layerprune.width.sparse import SPARSE_PRUNERS, SparseRequest, mask_lowest

BLOCK = 128


@SPARSE_PRUNERS.register("sparsegpt")
def sparsegpt(request: SparseRequest) -> torch.Tensor:
    """Prune columns left to right, each weight's error ``(w − q)/[H⁻¹]_jj`` spread over later columns.

    ``U`` is the upper Cholesky factor of ``H⁻¹`` (damped). Within a block of 128 columns the
    mask is chosen by the OBS saliency ``w² / U_jj²``; pruning column ``j`` subtracts
    ``err_j · U_{j, j:}`` from the columns still to come, and the block's errors update the
    columns after it at once (the lazy batch update). For 2:4, per group of four when the
    group is reached. The unstructured mask is ``mask``:

    * ``block`` (SparseGPT's code, ``IST-DASLab/sparsegpt`` ``sparsegpt.py`` lines 96–98): one
      threshold over the whole out × 128 block, all rows together — the saliency at sorted
      position ``int(sparsity · out · 128)``, and every weight at or below it is pruned (so
      one more than that count, more with ties). Rows of a layer end at different sparsities.
    * ``row`` (a layerprune variant): the lowest ``round(sparsity · 128)`` of each row of the
      block, so every row reaches the target.
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
    mask = None if request.pattern == "2:4" else _block_mask(block.pow(2) / diagonal.pow(2), request)
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


def _block_mask(saliency: torch.Tensor, request: SparseRequest) -> torch.Tensor:
    """True where a weight of the block is pruned (see :func:`sparsegpt`'s ``mask``)."""
    if request.mask == "row":
        return mask_lowest(saliency, request.sparsity, "unstructured")
    threshold = saliency.flatten().sort().values[int(saliency.numel() * request.sparsity)]
    return saliency <= threshold
