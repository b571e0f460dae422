"""Optimal Brain Surgeon over groups of input columns: the math under SlimGPT's structured pruning.

A linear map ``W`` (out × in) sees calibration inputs ``X`` (in × N). Its Hessian is
``H = 2 X Xᵀ / N`` (the curvature of ``‖W X − W' X‖² / N``), damped by a fraction of its
mean diagonal so it can be inverted; ``A = H⁻¹``. Removing the column set ``S`` and letting
the remaining columns absorb the loss optimally (Hassibi & Stork 1993, SparseGPT's
row-wise form; SlimGPT, Ling et al. 2024, arXiv 2412.18110, §3 for column groups) gives

    ΔW = −W_{:,S} (A_SS)⁻¹ A_{S,:}                 (columns S of W + ΔW are exactly 0)
    loss = ½ · tr(W_{:,S} (A_SS)⁻¹ W_{:,S}ᵀ) = ½ · ‖L⁻¹ W_{:,S}ᵀ‖²_F   with A_SS = L Lᵀ

so every group's score comes from the Cholesky factor of its own diagonal block of ``A``
(one batched Cholesky for all heads). For single columns this is SlimGPT's FFN score
``ε_j = ‖W_{:,j}‖² / A_jj``. Dead inputs (``H_jj = 0``: the column never fires on the
calibration data) get ``H_jj = 1`` and a zero weight column, as in SparseGPT, so they cost
nothing and go first.
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


def group_scores(weight: torch.Tensor, inverse: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """``tr(W_{:,S} (A_SS)⁻¹ W_{:,S}ᵀ)`` for every row ``S`` of ``groups`` (G × m column indices)."""
    blocks = inverse[groups[:, :, None], groups[:, None, :]]  # G × m × m
    factor = torch.linalg.cholesky(blocks)
    columns = weight[:, groups].permute(1, 2, 0)  # G × m × out
    solved = torch.linalg.solve_triangular(factor, columns, upper=False)
    return solved.pow(2).sum(dim=(1, 2))


def compensate(weight: torch.Tensor, inverse: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``W + ΔW`` with ``ΔW = −W_{:,S} (A_SS)⁻¹ A_{S,:}`` for ``S = columns``; columns S become 0."""
    block = inverse[columns[:, None], columns[None, :]]
    solved = torch.linalg.solve(block, inverse[columns, :])  # (A_SS)⁻¹ A_{S,:}
    updated = weight - weight[:, columns] @ solved
    updated[:, columns] = 0.0
    return updated


def halving_batches(count: int) -> list[int]:
    """Dynamic Group Size: remove ⌈k/2⌉ of the k still to go, then ⌈k/4⌉, …, down to 1."""
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
) -> tuple[list[int], torch.Tensor]:
    """Remove ``sum(batches)`` groups of columns greedily with OBS compensation.

    Each batch removes the lowest-scoring groups ``S`` jointly, compensates the remaining
    columns, and then updates ``A`` to the inverse Hessian of the remaining columns ``R``,
    ``(H_RR)⁻¹ = A_RR − A_RS (A_SS)⁻¹ A_SR`` (the Schur complement: an exact recomputation
    at the cost of one rank-|S| update instead of a new inversion). Returns the removed
    group indices (in removal order) and the new weight (removed columns zero, float64).
    """
    hessian, weight = damped(hessian.to(torch.float64), weight.to(torch.float64), damp)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(hessian))
    alive, columns = list(range(len(groups))), groups.reshape(-1)
    removed: list[int] = []
    for size in batches:
        local = torch.arange(len(columns)).reshape(len(alive), -1)
        scores = group_scores(weight[:, columns], inverse, local)
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
