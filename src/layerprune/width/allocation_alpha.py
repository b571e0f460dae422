"""AlphaPruning: sparsity from the heavy-tailed self-regularisation of each layer (Lu et al. NeurIPS 2024).

Released code: ``haiquanlu/AlphaPruning``. Its defaults (``main.py`` lines 40–43) are the
``alpha_peak`` metric, ``epsilon = 0.3`` and the ``block_wise`` mapping (one α per decoder
layer, the mean over its linear weights, ``lib/prune.py`` line 169).
"""

from __future__ import annotations

import torch

from layerprune.width.sparse import ALLOCATIONS, AllocationContext, spread

BINS = 100  # histogram of log10 eigenvalues that locates the peak (``net_esd_estimator``'s ``bins``)


def eigenvalues(weight: torch.Tensor) -> torch.Tensor:
    """The ESD of ``WᵀW``: squared singular values of ``W``, ascending (SVD in float32 as the code's
    ``lib/esd_utils.py`` line 110–111, the fit in float64)."""
    return torch.linalg.svdvals(weight.to(torch.float32)).to(torch.float64).pow(2).sort().values


def hill_alpha(weight: torch.Tensor, xmin: str = "peak") -> float:
    """Power-law exponent of the ESD of ``WᵀW`` by the Hill estimator with lower cut-off ``x_min = λ_i``.

    For eigenvalues ``λ`` ascending and a start index ``i``, ``n = N − i`` and
    ``α_i = 1 + n / Σ_{k≥i} ln(λ_k / λ_i)``.

    ``peak`` (AlphaPruning's default, ``lib/esd_utils.py`` lines 141–170): ``i`` ranges over
    the eigenvalues near the peak of the histogram of ``log10 λ`` (100 bins; ``p`` = the peak
    bin's left edge); the code's window is ``log10(0.95 p) ≤ λ_i ≤ 1.5 p`` — its lower end
    compares a log10 value with a raw eigenvalue, and that is reproduced as written. Of these
    the one with the smallest Kolmogorov–Smirnov distance
    ``D_i = max_{k≥i} |1 − (λ_k/λ_i)^{1−α_i} − (k−i)/n|`` is chosen (an index outside the window
    counts as ``D = 1``, ``α = 0``; the code's ``α ≤ 1`` case cannot occur on a sorted spectrum).

    ``median`` (a layerprune variant, its former default): ``k = N // 2`` and
    ``α = 1 + k / Σ_{j<k} ln(λ'_j / λ'_k)`` with ``λ'`` descending — ``x_min`` is the
    ``(k+1)``-th largest eigenvalue and the count is ``k``, where the code's own ``xmin_mid``
    (lines 129–134) starts at ascending index ``N // 2`` and counts ``N − N // 2`` terms.
    """
    values = eigenvalues(weight)
    if xmin == "median":
        descending = values.flip(0)
        k = max(len(values) // 2, 1)
        return float(1 + k / torch.log(descending[:k] / descending[k]).sum().clamp_min(1e-12))
    low, high = _peak_window(values)
    starts = torch.nonzero((values[:-1] >= low) & (values[:-1] <= high)).flatten()
    alphas, distances = (
        torch.zeros(len(values) - 1, dtype=values.dtype),
        torch.ones(len(values) - 1, dtype=values.dtype),
    )
    alphas[starts], distances[starts] = _hill_fits(values, starts)
    return float(alphas[distances.argmin()])  # the first smallest distance


def _peak_window(values: torch.Tensor) -> tuple[float, float]:
    """The code's x_min window ``[log10(0.95 p), 1.5 p]``, ``p`` the left edge of the fullest log10 bin."""
    log10 = values.log10()
    lowest, highest = float(log10.min()), float(log10.max())
    counts = torch.histc(log10, BINS, min=lowest, max=highest)
    peak = 10 ** float(torch.linspace(lowest, highest, BINS + 1, dtype=torch.float64)[counts.argmax()])
    return torch.log10(torch.tensor(0.95 * peak)).item(), 1.5 * peak


def _hill_fits(values: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``α_i`` and the KS distance ``D_i`` for each start index ``i`` in ``starts`` (eigenvalues ascending)."""
    start = starts.to(values.dtype)
    count = len(values) - start
    logs = values.log()
    tails = logs.flip(0).cumsum(0).flip(0)[starts]  # Σ_{k≥i} ln λ_k
    alphas = 1 + count / (tails - count * logs[starts])
    index = torch.arange(len(values), dtype=values.dtype)
    fitted = 1 - (values[None, :] / values[starts, None]).pow(1 - alphas[:, None])
    gaps = (fitted - (index[None, :] - start[:, None]) / count[:, None]).abs()
    distances = torch.where(index[None, :] >= start[:, None], gaps, 0.0).amax(dim=1)
    return alphas, distances


@ALLOCATIONS.register("alpha")
def alpha(context: AllocationContext) -> list[float]:
    """Layers with heavier tails (smaller mean α) are pruned less.

    ``α_l`` is the mean Hill exponent (``alpha_xmin``) of the layer's linear weights, ``n_l``
    its min-max normalisation and ``ε = alpha_epsilon`` (default 0.3, the code's).
    ``alpha_map``: ``multiplicative`` (the code's, ``lib/prune.py`` lines 181–183 with
    ``s1 = 1 − ε``, ``s2 = 1 + ε`` from lines 407–408): ``r_l = 1 − ε + 2ε·n_l``, then
    ``S_l = r_l · S · ΣP / Σ P_l r_l`` with ``P_l`` the layer's weight count, so the
    weight-weighted mean is ``S`` and ``S_l ≈ S(1 ± ε)``. ``additive`` (a layerprune variant):
    ``S_l = S + 2ε(n_l − mean n)``, the range ``[S − ε, S + ε]`` that OWL uses.
    """
    config = context.config
    alphas = [sum(hill_alpha(w, config.alpha_xmin) for w in layer.values()) / len(layer) for layer in context.weights]
    if config.alpha_map == "additive":
        return spread(alphas, context.target, config.alpha_epsilon)
    return multiplicative(
        alphas,
        [sum(w.numel() for w in layer.values()) for layer in context.weights],
        context.target,
        config.alpha_epsilon,
    )


def multiplicative(scores: list[float], sizes: list[int], target: float, epsilon: float) -> list[float]:
    """``S_l = r_l · S · ΣP / Σ P_l r_l``, ``r_l = 1 − ε + 2ε·n_l``, ``n`` min-max normalised (equal: uniform)."""
    low, high = min(scores), max(scores)
    ratios = [1 - epsilon + 2 * epsilon * ((s - low) / (high - low) if high > low else 0.5) for s in scores]
    scale = target * sum(sizes) / sum(p * r for p, r in zip(sizes, ratios, strict=True))
    return [r * scale for r in ratios]
