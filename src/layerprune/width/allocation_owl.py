"""OWL: outlier-weighted layer-wise sparsity (Yin et al. 2024, arXiv 2310.05175)."""

from __future__ import annotations

import torch

from layerprune.width.sparse import ALLOCATIONS, AllocationContext, spread


def outlier_ratio(scores: list[torch.Tensor], m: float) -> float:
    """Layer outlier ratio: the fraction of elements whose Wanda score exceeds ``M ×`` its matrix's mean."""
    outliers = sum(int((s > m * s.mean()).sum()) for s in scores)
    return outliers / sum(s.numel() for s in scores)


@ALLOCATIONS.register("owl")
def owl(context: AllocationContext) -> list[float]:
    """``S_l = S + 2λ(ŝ_l − mean ŝ)`` with ``ŝ`` the min-max normalised *negative* outlier ratio ``−D_l``.

    ``D_l`` is the share of ``|W_ij|·‖X_j‖`` above ``M`` times the mean (``owl_m``,
    default 5, and ``owl_lambda``, default 0.08 — the paper's LLaMA values), so layers with more
    outliers are pruned less; the paper's ``[S − λ, S + λ]`` range is this map's.
    """
    m, lam = context.config.owl_m, context.config.owl_lambda
    ratios = [outlier_ratio(context.element_scores(i), m) for i in range(len(context.weights))]
    return spread([-r for r in ratios], context.target, lam)
