"""Optimal Brain Surgeon over groups of input columns: the math under SlimGPT's structured pruning.

A linear map ``W`` (out × in) sees calibration inputs ``X`` (in × N). Its Hessian is
``H = 2 X Xᵀ / N`` (the curvature of ``‖W X − W' X‖² / N``), damped by a fraction of its
mean diagonal so it can be inverted; ``A = H⁻¹``. Removing the column set ``S`` and letting
the remaining columns absorb the loss optimally (Hassibi & Stork 1993, SparseGPT's
row-wise form; SlimGPT, Ling et al. 2024, arXiv 2412.18110, §3 for column groups) gives

    ΔW = −W_{:,S} (A_SS)⁻¹ A_{S,:}                 (columns S of W + ΔW are exactly 0)
    loss = ½ · tr(W_{:,S} (A_SS)⁻¹ W_{:,S}ᵀ) = ½ · ‖L⁻¹ W_{:,S}ᵀ‖²_F   with A_SS = L Lᵀ

so every group's score can come from the Cholesky factor of its own diagonal block of ``A`` (one
batched Cholesky for all heads): the ``exact`` score. SlimGPT's released code
(``slim_utils/slimgpt.py``, ``SlimGPT.struct_prune``, lines 113–124) scores a head by the
diagonal of that factor only, ``Σ_{j∈S} ‖W_{:,j}‖² / L_jj²`` (the ``released`` score), which
ignores the off-diagonal of ``L`` and so differs when a head's inputs are correlated. For single
columns both are SlimGPT's FFN score ``ε_j = ‖W_{:,j}‖² / A_jj``. Dead inputs (``H_jj = 0``: the
column never fires on the calibration data) get ``H_jj = 1`` and a zero weight column, as in
SparseGPT, so they cost nothing and go first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class HessianAccumulator:
    """Running ``H = 2 X Xᵀ / N`` over every token row fed to :meth:`add` (in float64).

    With ``diagonal=True`` only ``diag H`` is accumulated (what Wanda needs); :meth:`hessian`
    then returns the diagonal matrix.
    """

    def __init__(self, dim: int, diagonal: bool = False) -> None:
        self.diagonal = diagonal
        self.sum = torch.zeros(dim if diagonal else (dim, dim), dtype=torch.float64)
        self.count = 0

    def add(self, inputs: torch.Tensor) -> None:
        rows = inputs.reshape(-1, inputs.shape[-1]).to(torch.float64)
        self.sum += rows.pow(2).sum(0) if self.diagonal else rows.T @ rows
        self.count += rows.shape[0]

    def hessian(self) -> torch.Tensor:
        scaled = 2 * self.sum / max(self.count, 1)
        return torch.diag(scaled) if self.diagonal else scaled


def damped(hessian: torch.Tensor, weight: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``H + damp · mean(diag H) · I`` with dead columns set to ``H_jj = 1`` and their weights to 0."""
    hessian = hessian.clone()
    weight = weight.clone()
    dead = torch.diagonal(hessian) == 0
    hessian[dead, dead] = 1.0
    weight[:, dead] = 0.0
    diagonal = torch.diagonal(hessian)
    diagonal += damp * diagonal.mean()
    return hessian, weight


def group_scores(
    weight: torch.Tensor, inverse: torch.Tensor, groups: torch.Tensor, score: str = "released"
) -> torch.Tensor:
    """The OBS score of every row ``S`` of ``groups`` (G × m column indices), ``A_SS = L Lᵀ``.

    ``exact``: ``tr(W_{:,S} (A_SS)⁻¹ W_{:,S}ᵀ) = ‖L⁻¹ W_{:,S}ᵀ‖²``, twice the loss of removing
    ``S`` jointly. ``released``: ``Σ_{j∈S} ‖W_{:,j}‖² / L_jj²`` (SlimGPT's code, see the module
    docstring).
    """
    blocks = inverse[groups[:, :, None], groups[:, None, :]]  # G × m × m
    factor = torch.linalg.cholesky(blocks)
    columns = weight[:, groups].permute(1, 2, 0)  # G × m × out
    if score == "released":
        diagonal = torch.diagonal(factor, dim1=-2, dim2=-1)  # G × m
        return (columns.pow(2).sum(dim=2) / diagonal.pow(2)).sum(dim=1)
    solved = torch.linalg.solve_triangular(factor, columns, upper=False)
    return solved.pow(2).sum(dim=(1, 2))


def compensate(weight: torch.Tensor, inverse: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``W + ΔW`` with ``ΔW = −W_{:,S} (A_SS)⁻¹ A_{S,:}`` for ``S = columns``; columns S become 0."""
    block = inverse[columns[:, None], columns[None, :]]
    solved = torch.linalg.solve(block, inverse[columns, :])  # (A_SS)⁻¹ A_{S,:}
    updated = weight - weight[:, columns] @ solved
    updated[:, columns] = 0.0
    return updated


def released_batches(count: int) -> list[int]:
    """SlimGPT's channel batches as its code runs them (``slim_utils/slimgpt.py`` lines 109, 129, 161).

    A running size ``b`` starts at ``(k − 512) // 2`` for ``k`` channels to remove and becomes
    ``(b − 512) // 2`` after each batch; a batch removes ``min(left, max(b, 64), 1024)``. So
    the first batch is the largest and the rest shrink to a floor of 64 (every batch at once
    when ``k ≤ 64``).
    """
    sizes, size = [], (count - 512) // 2
    while sum(sizes) < count:
        sizes.append(min(count - sum(sizes), max(size, 64), 1024))
        size = (size - 512) // 2
    return sizes


def halving_batches(count: int) -> list[int]:
    """The ``halving`` variant: remove ⌈k/2⌉ of the k still to go, then ⌈k/4⌉, …, down to 1."""
    sizes = []
    while count > 0:
        size = math.ceil(count / 2)
        sizes.append(size)
        count -= size
    return sizes


def obs_prune_groups(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    groups: torch.Tensor,
    batches: Sequence[int],
    damp: float = 0.01,
    score: str = "released",
) -> tuple[list[int], torch.Tensor]:
    """Remove ``sum(batches)`` groups of columns greedily with OBS compensation.

    Each batch removes the lowest-scoring groups ``S`` (by :func:`group_scores`' ``score``)
    jointly, compensates the remaining columns, and then updates ``A`` to the inverse Hessian of
    the remaining columns ``R``, ``(H_RR)⁻¹ = A_RR − A_RS (A_SS)⁻¹ A_SR`` (the Schur complement:
    an exact recomputation at the cost of one rank-|S| update instead of a new inversion).
    Returns the removed group indices (in removal order) and the new weight (removed columns
    zero, float64).
    """
    hessian, weight = damped(hessian.to(torch.float64), weight.to(torch.float64), damp)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(hessian))
    alive, columns = list(range(len(groups))), groups.reshape(-1)
    removed: list[int] = []
    for size in batches:
        local = torch.arange(len(columns)).reshape(len(alive), -1)
        scores = group_scores(weight[:, columns], inverse, local, score)
        chosen = torch.argsort(scores, stable=True)[:size].tolist()
        drop = local[chosen].reshape(-1)
        solved = torch.linalg.solve(inverse[drop[:, None], drop[None, :]], inverse[drop, :])  # (A_SS)⁻¹ A_{S,:}
        weight[:, columns] -= weight[:, columns[drop]] @ solved
        weight[:, columns[drop]] = 0.0
        keep = torch.ones(len(columns), dtype=torch.bool)
        keep[drop] = False
        inverse = (inverse - inverse[:, drop] @ solved)[keep][:, keep]
        removed.extend(alive[i] for i in chosen)
        alive = [g for i, g in enumerate(alive) if i not in set(chosen)]
        columns = columns[keep]
    return removed, weight
