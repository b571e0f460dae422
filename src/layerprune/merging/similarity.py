"""Similarity between the final hidden states of the original and a candidate model.

A similarity takes, per calibration batch, the reference states ``[B, T, D]``, the
candidate's states and the attention mask ``[B, T]``, and returns one number (higher =
more alike). Padding positions (mask 0) are ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from layerprune.registry import Registry

Similarity = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], Sequence[torch.Tensor]], float]
SIMILARITIES: Registry[Similarity] = Registry("similarity")


@SIMILARITIES.register("cosine")
def cosine(
    reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]
) -> float:
    """Mean over samples of cos(vec(H_ref), vec(H_cand)), each sample's [T, D] states flattened.

    This is the SLM paper's code (``torch.cosine_similarity`` of the flattened last hidden
    state, batch size 1, averaged over samples); LaCo averages per-sample cosines likewise.
    """
    values = []
    for ref, cand, mask in zip(reference, candidate, masks, strict=True):
        for i in range(ref.shape[0]):
            keep = mask[i].bool()
            a, b = ref[i][keep].double().flatten(), cand[i][keep].double().flatten()
            values.append(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return float(torch.stack(values).mean())


@SIMILARITIES.register("cka")
def cka(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> float:
    """Linear CKA (Kornblith et al., 2019) over all real tokens pooled: rows are tokens.

    CKA(X, Y) = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) with X, Y column-centred; 1 = identical up
    to rotation and isotropic scaling.
    """
    x = torch.cat([ref[mask.bool()] for ref, mask in zip(reference, masks, strict=True)]).double()
    y = torch.cat([cand[mask.bool()] for cand, mask in zip(candidate, masks, strict=True)]).double()
    x, y = x - x.mean(0), y - y.mean(0)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    return float(cross / (torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)))
