"""``Scores``: every metric's per-layer scores from one scoring run, with JSON round trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from layerprune.calibration import CalibrationConfig
from layerprune.errors import UserError
from layerprune.metrics.base import LayerScores
from layerprune.records import read_json
from layerprune.saving import write_json

SCORES_FORMAT = 1


@dataclass
class Scores:
    """Per-layer scores of several metrics for one model (lower = remove first), plus what produced them.

    ``similarity`` holds ``[S][S]`` matrices (``"cosine"``, ``"cka"``) between the ``S = L + 1``
    hidden states: state 0 is the embedding output, state ``i`` the output of layer ``i − 1``.
    ``settings`` records the scoring options (batch size, angular tokens, SLEB steps, seed).
    """

    model: str
    num_layers: int
    metrics: dict[str, LayerScores]
    calibration: CalibrationConfig | None = None
    similarity: dict[str, list[list[float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def get(self, metric: str) -> LayerScores:
        if metric not in self.metrics:
            raise UserError(f"no scores for metric {metric!r}; these were scored: {', '.join(self.metrics) or 'none'}")
        return self.metrics[metric]

    def removal_order(self, metric: str, k: int, exclude_first: int = 0, exclude_last: int = 0) -> list[int]:
        """The ``k`` layers ``metric`` removes first (a block metric: its best contiguous block of ``k``)."""
        return self.get(metric).removal_order(k, exclude_first, exclude_last)

    @property
    def angular_table(self) -> dict[int, list[float]]:
        """``d(l, n)`` by block size ``n`` (empty if ``angular`` was not scored)."""
        angular = self.metrics.get("angular")
        return dict(angular.blocks or {}) if angular else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SCORES_FORMAT,
            "model": self.model,
            "num_layers": self.num_layers,
            "calibration": asdict(self.calibration) if self.calibration else None,
            "settings": self.settings,
            "metrics": {name: _metric_record(scores) for name, scores in self.metrics.items()},
            "similarity": self.similarity,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Scores:
        if record.get("format") != SCORES_FORMAT:
            raise UserError(f"not a layerprune scores file (format {record.get('format')!r}, expected {SCORES_FORMAT})")
        calibration = record.get("calibration")
        return cls(
            model=record["model"],
            num_layers=record["num_layers"],
            metrics={name: _metric_from_record(name, entry) for name, entry in record["metrics"].items()},
            calibration=CalibrationConfig(**calibration) if calibration else None,
            similarity=record.get("similarity", {}),
            settings=record.get("settings", {}),
        )

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Scores:
        record = read_json(Path(path))
        try:
            return cls.from_dict(record)
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise UserError(f"{path} is not a layerprune scores file ({type(error).__name__}: {error})") from None


def _metric_record(scores: LayerScores) -> dict[str, Any]:
    record: dict[str, Any] = {
        "scores": scores.scores,
        "removal_order": scores.ranking(),
        "exclude_first": scores.exclude_first,
        "exclude_last": scores.exclude_last,
    }
    if scores.blocks is not None:
        record["blocks"] = {str(n): values for n, values in scores.blocks.items()}
        record["best_blocks"] = {str(n): scores.best_block(n) for n in scores.blocks}
    return record


def _metric_from_record(name: str, record: dict[str, Any]) -> LayerScores:
    blocks = record.get("blocks")
    return LayerScores(
        metric=name,
        scores=[float(v) for v in record["scores"]],
        blocks={int(n): [float(v) for v in values] for n, values in blocks.items()} if blocks else None,
        exclude_first=record.get("exclude_first", 0),
        exclude_last=record.get("exclude_last", 0),
    )
