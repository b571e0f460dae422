"""Wanda-structured: Wanda's |W|·‖X‖ importance summed over a head or channel."""

from __future__ import annotations

import torch

from layerprune.width.base import ColumnRequest, lowest, register_width_method


@register_width_method("wanda")
def wanda_structured(request: ColumnRequest) -> tuple[list[int], torch.Tensor]:
    """Score of a group S = Σ_{i, j∈S} |W_ij| · ‖X_j‖₂ (Sun et al. 2023, arXiv 2306.11695); no compensation.

    ``‖X_j‖₂ ∝ sqrt(H_jj)`` since ``H = 2XXᵀ/N``; the constant factor does not change the ranking.
    """
    norms = torch.diagonal(request.hessian).clamp_min(0).sqrt().to(request.weight.dtype)
    element = request.weight.abs() * norms
    scores = element[:, request.groups].sum(dim=(0, 2))
    return lowest(scores, request.count), request.weight
