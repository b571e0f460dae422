"""OWL: outlier-weighted layer-wise sparsity (Yin et al. 2024, arXiv 2310.05175)."""

from __future__ import annotations

import torch

from layerprune.width.sparse import ALLOCATIONS, AllocationContext, spread


def outlier_ratio(scores: list[torch.Tensor], m: float, threshold: str = "pooled") -> float:
    """Layer outlier ratio ``D_l``: the fraction of the layer's Wanda scores above ``M ×`` a mean.

    ``pooled`` (OWL's code, ``luuyin/OWL`` ``lib/prune_all.py`` lines 943 and 146, in
    ``prune_wanda_outlier``: the layer's scores are concatenated, then compared with ``M ×``
    their one mean): the mean over all the layer's elements, so the large MLP matrices set it.
    ``per-matrix``: each matrix against ``M ×`` its own mean.
    """
    if threshold == "pooled":
        scores = [torch.cat([s.flatten() for s in scores])]
    outliers = sum(int((s > m * s.mean()).sum()) for s in scores)
    return outliers / sum(s.numel() for s in scores)


@ALLOCATIONS.register("owl")
def owl(context: AllocationContext) -> list[float]:
    """``S_l = S + 2λ(ŝ_l − mean ŝ)`` with ``ŝ`` the min-max normalised *negative* outlier ratio ``−D_l``.

    ``D_l`` is :func:`outlier_ratio` with ``owl_m`` (default 5) and ``owl_threshold``
    (default ``pooled``); ``owl_lambda`` defaults to 0.08 (the paper's LLaMA values). Layers
    with more outliers are pruned less: OWL's code maps the normalised ratio to a *density*
    ``2λ(n_l − mean n) + 1 − S`` (``lib/prune_all.py`` lines 964–966) and prunes ``1 −`` that
    (line 1054), which is this map.
    """
    config = context.config
    ratios = [
        outlier_ratio(context.element_scores(i), config.owl_m, config.owl_threshold)
        for i in range(len(context.weights))
    ]
    return spread([-r for r in ratios], context.target, config.owl_lambda)
