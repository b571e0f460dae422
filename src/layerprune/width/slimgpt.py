"""SlimGPT structured pruning (Ling et al., NeurIPS 2024, arXiv 2412.18110)."""

from __future__ import annotations

import torch

from layerprune.width.base import ColumnRequest, register_width_method
from layerprune.width.obs import halving_batches, obs_prune_groups


@register_width_method("slimgpt")
def slimgpt(request: ColumnRequest) -> tuple[list[int], torch.Tensor]:
    """OBS-scored removal with compensation ΔW = −W_{:,S}(A_SS)⁻¹A_{S,:}, A = (H + δ·mean diag H·I)⁻¹.

    Heads (Batched Greedy Pruning): every KV group's score ``tr(W_S (A_SS)⁻¹ W_Sᵀ)`` comes
    from one batched Cholesky of the groups' diagonal blocks; the lowest group is removed
    and compensated, ``A`` is recomputed, and this repeats one group at a time.
    Channels (Dynamic Group Size): ``ε_j = ‖W_{:,j}‖² / A_jj``; batches of ⌈k/2⌉, ⌈k/4⌉, …
    of the k channels still to go, with ``A`` recomputed between batches. The paper's code
    uses fixed batch sizes; halving keeps the same large-first, shrinking shape for any k.
    """
    batches = [1] * request.count if request.kind == "heads" else halving_batches(request.count)
    return obs_prune_groups(request.weight, request.hessian, request.groups, batches, request.damp)
