"""The metric registry and the result type every layer-importance metric returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedModel

from layerprune.calibration import CalibrationSet
from layerprune.errors import UserError
from layerprune.registry import Registry


@dataclass
class ScoringContext:
    """Inputs a metric may need besides the model: the seed, calibration data and the batch size."""

    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    calibration: CalibrationSet | None = None
    batch_size: int = 4

    def require_calibration(self, metric: str) -> CalibrationSet:
        """The calibration set; a :class:`UserError` if a data metric is asked to run without one."""
        if self.calibration is None:
            raise UserError(f"metric {metric!r} needs calibration data (ScoringContext.calibration)")
        return self.calibration


@dataclass
class LayerScores:
    """Per-layer importance of one metric; lower means "remove first"."""

    metric: str
    scores: list[float]

    def removal_order(self, k: int, exclude_first: int = 0, exclude_last: int = 0) -> list[int]:
        """The ``k`` least important layers, excluding the first/last few from the candidates."""
        candidates = candidate_layers(len(self.scores), exclude_first, exclude_last)
        if k > len(candidates):
            raise UserError(f"cannot remove {k} layers: only {len(candidates)} are candidates")
        return sorted(sorted(candidates, key=lambda i: (self.scores[i], -i))[:k])


MetricFunction = Callable[[PreTrainedModel, ScoringContext], LayerScores]
METRICS: Registry[MetricFunction] = Registry("metric")
register_metric = METRICS.register


def candidate_layers(num_layers: int, exclude_first: int = 0, exclude_last: int = 0) -> list[int]:
    if exclude_first < 0 or exclude_last < 0:
        raise UserError("--exclude-first/--exclude-last must be ≥ 0")
    return list(range(exclude_first, num_layers - exclude_last))
