"""The metric registry, the scoring context and the result type every layer-importance metric returns."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from layerprune.calibration import CalibrationSet
from layerprune.errors import UserError
from layerprune.registry import Registry

ANGULAR_TOKENS = ("last", "all")
# Scoring presets: ScoringContext fields they set. "paper" follows the papers' released code.
SCORING_PRESETS: Registry[dict[str, Any]] = Registry("scoring preset")
SCORING_PRESETS.add("ours", {})
SCORING_PRESETS.add("paper", {"sleb_exclude_ends": True, "magnitude_weights_only": True})


@dataclass
class ScoringContext:
    """Inputs a metric may need besides the model, with their defaults.

    ``calibration`` feeds the data metrics; ``batch_size`` windows go through the model at
    once. ``angular_tokens`` is ``"last"`` (the last non-pad token, as Gromov et al.) or
    ``"all"`` (mean over non-pad tokens). ``sleb_steps`` is how many greedy SLEB removals to
    run (``None``: a quarter of the layers). ``exclude_first``/``exclude_last`` keep layers
    out of the candidates of the greedy and block searches. ``cache`` shares one layer-wise
    pass (:mod:`layerprune.metrics.layerwise`) between the metrics of one scoring run, and
    ``plan`` names them (so one pass serves similarity and removal metrics together).
    ``layers`` is where the pass takes decoder layers from (``None``: the model in memory;
    a :class:`~layerprune.streaming.layers.StreamedModel` streams them from the shards);
    ``state_budget`` bounds the bytes of hidden states kept in memory (the rest is
    memory-mapped on disk; ``None``: no bound).

    Where a paper's released code differs from the paper (docs/metrics.md), the code's
    behaviour is an option: ``sleb_exclude_ends`` (never remove the first or last layer, as
    SLEB's code) and ``magnitude_weights_only`` (sum only tensors named ``*weight``, no
    biases, as Lu et al.'s code). ``preset="paper"`` turns all of them on (see ``SCORING_PRESETS``).
    """

    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    calibration: CalibrationSet | None = None
    batch_size: int = 4
    angular_tokens: str = "last"
    sleb_steps: int | None = None
    exclude_first: int = 0
    exclude_last: int = 0
    progress: bool = True
    sleb_exclude_ends: bool = False
    magnitude_weights_only: bool = False
    preset: str = "ours"
    state_budget: int | None = None
    layers: Any = None
    plan: tuple[str, ...] = ()
    cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name, value in SCORING_PRESETS.get(self.preset).items():
            setattr(self, name, value)
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.angular_tokens not in ANGULAR_TOKENS:
            raise UserError(f"--angular-tokens must be one of {', '.join(ANGULAR_TOKENS)}, got {self.angular_tokens!r}")
        if self.sleb_steps is not None and self.sleb_steps < 1:
            raise UserError(f"--sleb-steps must be at least 1, got {self.sleb_steps}")
        candidate_layers(1, self.exclude_first, self.exclude_last)

    def require_calibration(self, metric: str) -> CalibrationSet:
        """The calibration set; a :class:`UserError` if a data metric is asked to run without one."""
        if self.calibration is None:
            raise UserError(f"metric {metric!r} needs calibration data (ScoringContext.calibration)")
        return self.calibration


@dataclass
class LayerScores:
    """Per-layer importance of one metric; lower means "remove first".

    A block metric also carries ``blocks[n][l]``, the score of removing layers ``l … l+n−1``
    together; its removal order for ``k`` layers is then the best contiguous block of size
    ``k``. ``exclude_first``/``exclude_last`` are the metric's own exclusions (``taylor+``);
    they combine with those given to :meth:`removal_order` by taking the larger.
    """

    metric: str
    scores: list[float]
    blocks: dict[int, list[float]] | None = None
    exclude_first: int = 0
    exclude_last: int = 0

    def removal_order(self, k: int, exclude_first: int = 0, exclude_last: int = 0) -> list[int]:
        """The ``k`` least important layers (or best block), excluding the first/last few from the candidates."""
        first, last = max(exclude_first, self.exclude_first), max(exclude_last, self.exclude_last)
        candidates = candidate_layers(len(self.scores), first, last)
        if k < 1 or k > len(candidates):
            raise UserError(f"cannot remove {k} layers: {len(candidates)} are candidates (after exclusions)")
        if self.blocks is not None:
            return self.best_block(k, first, last)
        return sorted(self.ranking(first, last)[:k])

    def ranking(self, exclude_first: int = 0, exclude_last: int = 0) -> list[int]:
        """Candidate layers from least to most important (ties: the deeper layer first)."""
        first, last = max(exclude_first, self.exclude_first), max(exclude_last, self.exclude_last)
        return sorted(candidate_layers(len(self.scores), first, last), key=lambda i: (self.scores[i], -i))

    def best_block(self, n: int, exclude_first: int = 0, exclude_last: int = 0) -> list[int]:
        """Layers ``l … l+n−1`` of the lowest-scoring block of ``n`` layers inside the candidates."""
        if self.blocks is None or n not in self.blocks:
            raise UserError(f"metric {self.metric!r} has no block scores for {n} layers")
        starts = range(exclude_first, len(self.scores) - exclude_last - n + 1)
        if not starts:
            raise UserError(f"no block of {n} layers fits between the excluded layers")
        start = min(starts, key=lambda s: (self.blocks[n][s], s))
        return list(range(start, start + n))


MetricFunction = Callable[[PreTrainedModel, ScoringContext], LayerScores]
METRICS: Registry[MetricFunction] = Registry("metric")
register_metric = METRICS.register


def progress_batches(
    model: PreTrainedModel, context: ScoringContext, description: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The calibration batches on the model's device, with a progress bar."""
    calibration = context.require_calibration(description)
    total = math.ceil(len(calibration) / context.batch_size)
    bar = tqdm(calibration.batches(context.batch_size), total=total, desc=description, disable=not context.progress)
    for input_ids, attention_mask in bar:
        yield input_ids.to(model.device), attention_mask.to(model.device)


def data_free(metric: MetricFunction) -> MetricFunction:
    """Mark a metric that needs no calibration data (so scoring with it loads none)."""
    metric.data_free = True  # type: ignore[attr-defined]
    return metric


def scans_removals(metric: MetricFunction) -> MetricFunction:
    """Mark a metric that scores the removal of each single layer (its table comes from the layer-wise pass)."""
    metric.scans_removals = True  # type: ignore[attr-defined]
    return metric


def needs_calibration(name: str) -> bool:
    return not getattr(METRICS.get(name), "data_free", False)


def layers_for_ratio(ratio: float, num_layers: int) -> int:
    """k = round(ratio · L), halves rounded up (0.25 × 30 = 7.5 → 8), computed exactly in decimal."""
    if not 0 < ratio < 1:
        raise UserError(f"--ratio must be between 0 and 1 (exclusive), got {ratio}")
    count = int((Decimal(str(ratio)) * num_layers).to_integral_value(rounding=ROUND_HALF_UP))
    if not 1 <= count < num_layers:
        raise UserError(
            f"--ratio {ratio} of {num_layers} layers gives {count} layers to remove; need 1 … {num_layers - 1}"
        )
    return count


def candidate_layers(num_layers: int, exclude_first: int = 0, exclude_last: int = 0) -> list[int]:
    if exclude_first < 0 or exclude_last < 0:
        raise UserError("--exclude-first/--exclude-last must be ≥ 0")
    return list(range(exclude_first, num_layers - exclude_last))
