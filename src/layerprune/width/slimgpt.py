"""SlimGPT structured pruning (Ling et al., NeurIPS 2024, arXiv 2412.18110)."""

from __future__ import annotations

import torch

from layerprune.width.base import ColumnRequest, register_width_method
from layerprune.width.obs import halving_batches, obs_prune_groups, released_batches


@register_width_method("slimgpt")
def slimgpt(request: ColumnRequest) -> tuple[list[int], torch.Tensor]:
    """OBS-scored removal with compensation ΔW = −W_{:,S}(A_SS)⁻¹A_{S,:}, A = (H + δ·mean diag H·I)⁻¹.

    Heads (Batched Greedy Pruning): every KV group is scored from one batched Cholesky
    ``A_SS = L Lᵀ`` of the groups' diagonal blocks; the lowest group is removed and
    compensated, ``A`` is recomputed, and this repeats one group at a time. The score is
    ``head_score``: ``released`` (default) ``Σ_{j∈S} ‖W_{:,j}‖² / L_jj²`` as SlimGPT's code
    computes it (``slim_utils/slimgpt.py`` lines 113–124), or ``exact``, the joint OBS error
    ``tr(W_S (A_SS)⁻¹ W_Sᵀ)`` (the paper's §3 objective for a group).
    Channels (Dynamic Group Size): ``ε_j = ‖W_{:,j}‖² / A_jj`` with ``A`` recomputed between
    batches. ``channel_batches``: ``released`` (default) is the code's schedule, a first batch
    of ``(k − 512) // 2`` then shrinking to a floor of 64 and capped at 1024
    (:func:`~layerprune.width.obs.released_batches`); ``halving`` removes ⌈k/2⌉, ⌈k/4⌉, …, 1,
    the same large-first shape down to single channels.
    """
    if request.kind == "heads":
        batches = [1] * request.count
    elif request.channel_batches == "halving":
        batches = halving_batches(request.count)
    else:
        batches = released_batches(request.count)
    return obs_prune_groups(request.weight, request.hessian, request.groups, batches, request.damp, request.head_score)
