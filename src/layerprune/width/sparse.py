"""Unstructured and 2:4 sparsity: registries of base pruners and of layer-wise sparsity allocations.

A **pruner** ``(request: SparseRequest) -> weight`` zeroes a fraction ``sparsity`` of one
linear layer's weights (``pattern`` ``unstructured``: per output row, so each row keeps the
same count; ``2:4``: two of every four consecutive input weights), compensating the rest
if it can. An **allocation** ``(context: AllocationContext) -> per-layer sparsities`` decides
how much each decoder layer gets; every allocation's mean equals the target (see
:func:`spread`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import torch

from layerprune.registry import Registry

if TYPE_CHECKING:
    from layerprune.width.sparsify import SparsifyConfig

Pattern = Literal["unstructured", "2:4"]
PATTERNS = get_args(Pattern)


@dataclass
class SparseRequest:
    """Zero ``sparsity`` of ``weight`` (out × in) in ``pattern``; ``hessian`` is ``2XXᵀ/N`` of its inputs."""

    weight: torch.Tensor
    hessian: torch.Tensor
    sparsity: float
    pattern: str = "unstructured"
    damp: float = 0.01
    mask: str = "block"  # SparseGPT's unstructured mask: "block" (released) or "row"


@dataclass
class AllocationContext:
    """What an allocation may look at: each layer's linear weights and input Hessians, and the settings."""

    weights: list[dict[str, torch.Tensor]]  # per layer: module path → weight
    input_norms: list[dict[str, torch.Tensor]]  # per layer: module path → diag(2XXᵀ/N) of the dense model
    config: SparsifyConfig
    evaluate: Callable[[list[float]], float] | None = None  # fitness: calibration PPL after pruning so
    found_function: dict | None = None  # set by allocations that discover a function (DSA)

    @property
    def target(self) -> float:
        return self.config.sparsity

    def element_scores(self, index: int) -> list[torch.Tensor]:
        """Wanda's ``|W_ij| · ‖X_j‖₂`` for every linear layer of decoder layer ``index``."""
        return [wanda_scores(weight, self.input_norms[index][path]) for path, weight in self.weights[index].items()]


Pruner = Callable[[SparseRequest], torch.Tensor]
Allocation = Callable[[AllocationContext], list[float]]
SPARSE_PRUNERS: Registry[Pruner] = Registry("sparse pruner")
ALLOCATIONS: Registry[Allocation] = Registry("sparsity allocation")


def wanda_scores(weight: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """``|W_ij| · ‖X_j‖₂`` up to a constant factor, from ``diagonal = diag H`` (``‖X_j‖² = N·H_jj/2``)."""
    return weight.abs().to(torch.float64) * diagonal.clamp_min(0).sqrt()


def mask_lowest(scores: torch.Tensor, sparsity: float, pattern: str) -> torch.Tensor:
    """True where a weight is pruned: the lowest ``round(sparsity · in)`` per row, or 2 of every 4."""
    if pattern == "2:4":
        groups = scores.reshape(scores.shape[0], -1, 4)
        lowest = torch.argsort(groups, dim=-1, stable=True)[..., :2]
        return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, lowest, True).reshape(scores.shape)
    count = round(sparsity * scores.shape[1])
    lowest = torch.argsort(scores, dim=1, stable=True)[:, :count]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, lowest, True)


def spread(scores: list[float], target: float, lam: float) -> list[float]:
    """``S_l = S + 2λ(ŝ_l − mean ŝ)`` with ``ŝ`` the min-max normalised scores, so ``mean S_l = S``.

    (OWL's code, ``luuyin/OWL`` ``lib/prune_all.py`` lines 964–966, and DSA's, which reuses
    it; AlphaPruning's own map is multiplicative, see :mod:`.allocation_alpha`.) A higher
    score means more sparsity. Equal scores give the uniform allocation.
    """
    low, high = min(scores), max(scores)
    normal = [(s - low) / (high - low) if high > low else 0.0 for s in scores]
    mean = sum(normal) / len(normal)
    return [target + 2 * lam * (n - mean) for n in normal]
