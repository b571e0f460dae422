"""One hooked forward pass that yields every similarity statistic: BI, global BI, angular, cosine and CKA.

The states come from one layer-wise pass (:class:`~layerprune.metrics.layerwise.LayerwisePass`:
the ``S = L + 1`` hidden states before the final norm, as :func:`~layerprune.execution.capture_layer_inputs`
takes them: state 0 is the embedding output, state ``i`` the output of layer ``i − 1``),
and each batch is folded into running sums. Per-batch math is fp32 (bf16/fp16 states are
upcast) and the sums are fp64. Pad tokens (``attention_mask == 0``) are left out of every
statistic. The metrics ``bi``, ``bi-global``, ``angular`` and ``cka`` all read one
:class:`SimilarityStatistics`, cached in the :class:`ScoringContext`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from layerprune.metrics.base import ScoringContext
from layerprune.metrics.layerwise import layerwise_pass, removal_planned

_ANGLE_CHUNK = 16


@dataclass
class SimilarityStatistics:
    """Running sums over the calibration tokens for every pair ``(a, b)`` of the ``S`` states.

    * ``cosine_sum[a, b] = Σ_t cos(x_a,t, x_b,t)`` over ``tokens`` non-pad tokens;
    * ``dot[a, b] = Σ_t ⟨x_a,t, x_b,t⟩`` (the flattened inner products of global BI);
    * ``angle_sum[a, b] = Σ arccos(cos(x_a, x_b)) / π`` over ``angle_count`` positions (the
      last non-pad token of each sample, or every non-pad token);
    * ``hsic[a, b] = Σ_samples ⟨K_a, K_b⟩_F`` with ``K = X_c X_cᵀ`` the token Gram matrix of a
      sample's centred states (linear-kernel HSIC, up to a constant per sample).
    """

    cosine_sum: torch.Tensor
    dot: torch.Tensor
    angle_sum: torch.Tensor
    hsic: torch.Tensor
    tokens: int = 0
    angle_count: int = 0

    @classmethod
    def empty(cls, num_states: int) -> SimilarityStatistics:
        zeros = [torch.zeros(num_states, num_states, dtype=torch.float64) for _ in range(4)]
        return cls(*zeros)

    def add(self, states: list[torch.Tensor], attention_mask: torch.Tensor, angular_tokens: str) -> None:
        """Fold one batch of states (``S`` tensors ``[batch, seq, hidden]``) into the sums."""
        stacked = torch.stack([state.float() for state in states])
        real = attention_mask.bool().to(stacked.device)
        tokens = stacked[:, real]
        unit = F.normalize(tokens, dim=-1)
        self.cosine_sum += _pair_sums(unit)
        self.dot += _pair_sums(tokens)
        self.tokens += tokens.shape[1]
        positions = unit if angular_tokens == "all" else F.normalize(stacked[:, *_last_real(real)], dim=-1)
        self.angle_sum += pairwise_angles(positions).sum(-1).double()
        self.angle_count += positions.shape[1]
        for sample in range(stacked.shape[1]):
            self.hsic += _gram_hsic(stacked[:, sample, real[sample]])

    def cosine_matrix(self) -> torch.Tensor:
        """Mean cosine similarity between states ``a`` and ``b`` over non-pad tokens, ``[S, S]``."""
        return self.cosine_sum / self.tokens

    def global_cosine_matrix(self) -> torch.Tensor:
        """Cosine between the flattened states of the whole calibration set, ``[S, S]``."""
        norms = self.dot.diagonal().clamp_min(1e-300).sqrt()
        return self.dot / (norms[:, None] * norms[None, :])

    def angular_matrix(self) -> torch.Tensor:
        """Mean angular distance ``arccos(cos)/π`` between states ``a`` and ``b``, ``[S, S]``."""
        return self.angle_sum / self.angle_count

    def cka_matrix(self) -> torch.Tensor:
        """Linear CKA between states ``a`` and ``b``, ``[S, S]`` (1 on the diagonal)."""
        norms = self.hsic.diagonal().clamp_min(1e-300).sqrt()
        return self.hsic / (norms[:, None] * norms[None, :])


def similarity_statistics(model: PreTrainedModel, context: ScoringContext) -> SimilarityStatistics:
    """The statistics of one layer-wise pass over ``context.calibration``, computed once per context.

    When a removal metric is scored too, the same pass computes every one-layer removal's NLL.
    """
    key = f"similarity/{context.angular_tokens}"
    if key not in context.cache:
        passes = layerwise_pass(model, context, "similarity")
        statistics = SimilarityStatistics.empty(passes.layers.num_layers + 1)
        candidates = list(range(passes.layers.num_layers)) if removal_planned(context) else []

        def fold(batch: int, states: list[torch.Tensor]) -> None:
            statistics.add(states, passes.batches[batch][1], context.angular_tokens)

        table = passes.run(set(), candidates, "similarity pass", fold)
        passes.tables.setdefault(frozenset(), {}).update(table)
        context.cache[key] = statistics
    return context.cache[key]


def pairwise_angles(unit: torch.Tensor) -> torch.Tensor:
    """``angle[a, b, t] / π`` between unit vectors ``unit[a, t]`` and ``unit[b, t]``, ``[S, S, T]``.

    Uses ``2·atan2(‖u − v‖, ‖u + v‖)``, which is exact for equal vectors (where ``arccos`` of
    a rounded cosine is off by ~1e-4) and accurate everywhere else.
    """
    chunks = []
    for part in unit.split(_ANGLE_CHUNK, dim=1):
        difference = (part[:, None] - part[None, :]).norm(dim=-1)
        total = (part[:, None] + part[None, :]).norm(dim=-1)
        chunks.append(2 * torch.atan2(difference, total) / math.pi)
    return torch.cat(chunks, dim=-1)


def _pair_sums(vectors: torch.Tensor) -> torch.Tensor:
    """``Σ_t ⟨v_a,t, v_b,t⟩`` for every pair of states: ``[S, T, H] → [S, S]`` (fp64)."""
    flat = vectors.reshape(vectors.shape[0], -1).double()
    return flat @ flat.T


def _last_real(real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample, position) of each sample's last non-pad token (left or right padding)."""
    positions = torch.arange(real.shape[1], device=real.device).expand_as(real)
    last = torch.where(real, positions, -1).argmax(dim=1)
    return torch.arange(real.shape[0], device=real.device), last


def _gram_hsic(sample_states: torch.Tensor) -> torch.Tensor:
    """``⟨K_a, K_b⟩_F`` for the centred token Gram matrices of one sample's states ``[S, T, H]``."""
    centred = sample_states - sample_states.mean(dim=1, keepdim=True)
    grams = (centred @ centred.transpose(1, 2)).reshape(centred.shape[0], -1)
    return (grams @ grams.T).double()
