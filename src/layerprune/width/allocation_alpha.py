"""AlphaPruning: sparsity from the heavy-tailed self-regularisation of each layer (Lu et al. NeurIPS 2024)."""

from __future__ import annotations

import torch

from layerprune.width.sparse import ALLOCATIONS, AllocationContext, spread


def hill_alpha(weight: torch.Tensor) -> float:
    """Power-law exponent of the ESD of ``WᵀW`` by the Hill estimator over the upper half of eigenvalues.

    ``α = 1 + k / Σ_{i<k} ln(λ_i / λ_k)`` with ``λ`` sorted descending and ``k = n/2``
    (AlphaPruning's ``xmin`` at the median, its default).
    """
    eigenvalues = torch.linalg.svdvals(weight.to(torch.float64)).pow(2).sort(descending=True).values
    k = max(len(eigenvalues) // 2, 1)
    logs = torch.log(eigenvalues[:k] / eigenvalues[k]).sum()
    return float(1 + k / logs.clamp_min(1e-12))


@ALLOCATIONS.register("alpha")
def alpha(context: AllocationContext) -> list[float]:
    """``S_l = S + 2ε(α̂_l − mean α̂)``: layers with heavier tails (smaller mean α) are pruned less.

    ``α_l`` is the mean Hill exponent of the layer's linear weights; ``epsilon`` (``alpha_epsilon``,
    default 0.1) bounds the spread as in the paper's ``[S − ε, S + ε]``.
    """
    epsilon = context.config.alpha_epsilon
    alphas = [sum(map(hill_alpha, layer.values())) / len(layer) for layer in context.weights]
    return spread(alphas, context.target, epsilon)
