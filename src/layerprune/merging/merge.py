"""``merge_model``: search for layers to merge (SLM or LaCo), fuse them, and apply the result by surgery."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated

from pydantic import Field
from transformers import PreTrainedModel

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.merging.candidates import CachedEvaluator, as_batches
from layerprune.merging.laco import LacoConfig, laco_search
from layerprune.merging.operators import MERGE_OPERATORS
from layerprune.merging.similarity import SIMILARITIES
from layerprune.merging.slm import SlmConfig, slm_search
from layerprune.merging.stack import LayerStack, apply_stack
from layerprune.merging.target import TargetConfig, TargetResult, search_for_count
from layerprune.metrics.base import layers_for_ratio
from layerprune.models import decoder_layers
from layerprune.registry import Registry

MERGE_METHODS: Registry = Registry("merge method")
MERGE_METHODS.add("slm", slm_search)
MERGE_METHODS.add("laco", laco_search)
SIMILARITY_RANGES = {"cosine": (-1.0, 1.0), "cka": (0.0, 1.0)}


@strict_config
class MergeConfig:
    """What to merge and how. Give exactly one of ``threshold``, ``num_layers`` (K) or ``ratio`` (K = round(R·L))."""

    method: str = "slm"
    threshold: float | None = None
    num_layers: Annotated[int, Field(ge=1)] | None = None
    ratio: Annotated[float, Field(gt=0, lt=1)] | None = None
    operator: str = "rdsc"
    similarity: str = "cosine"
    batch_size: Annotated[int, Field(ge=1)] = 8
    slm: SlmConfig = field(default_factory=SlmConfig)
    laco: LacoConfig = field(default_factory=LacoConfig)
    target: TargetConfig = field(default_factory=TargetConfig)

    def __post_init__(self) -> None:
        """Names are registered; the threshold lies in the similarity's range (cosine [−1, 1], CKA [0, 1])."""
        for registry, name in (
            (MERGE_METHODS, self.method),
            (MERGE_OPERATORS, self.operator),
            (SIMILARITIES, self.similarity),
        ):
            registry.get(name)  # an unknown name is a UserError with a did-you-mean
        low, high = SIMILARITY_RANGES.get(self.similarity, (-1.0, 1.0))
        if self.threshold is not None and not low <= self.threshold <= high:
            raise UserError(f"threshold must be in [{low:g}, {high:g}] for {self.similarity}, got {self.threshold}")

    def validate(self, num_layers: int) -> int | None:
        """Check names and the stopping rule before any work; return the target K (None: threshold mode)."""
        if sum(value is not None for value in (self.threshold, self.num_layers, self.ratio)) != 1:
            raise UserError("give exactly one of threshold, num_layers or ratio")
        # One rounding rule for every --ratio: halves up (18 layers × 0.25 → 5), as in `prune`.
        target = layers_for_ratio(self.ratio, num_layers) if self.ratio is not None else self.num_layers
        if target is not None and not 1 <= target < num_layers:
            raise UserError(f"cannot remove {target} of {num_layers} layers")
        return target


@dataclass
class MergeResult:
    """The committed stack, the threshold used, the target search (target mode) and the search cost."""

    stack: LayerStack
    threshold: float
    target: TargetResult | None
    evaluations: int
    seconds: float


def merge_model(model: PreTrainedModel, calibration: object, config: MergeConfig) -> MergeResult:
    """Merge ``model``'s layers in place (SLM or LaCo) and return what was done.

    ``calibration`` is a :class:`~layerprune.calibration.CalibrationSet` (anything with
    ``batches(batch_size)``) or a sequence of ``(input_ids, attention_mask)`` batches.
    """
    target = config.validate(len(decoder_layers(model)))
    started = time.perf_counter()
    evaluator = CachedEvaluator(model, as_batches(calibration, config.batch_size), config.similarity)
    search = partial(_search_at, model, evaluator, config)
    result = search_for_count(search, target, config.target) if target is not None else None
    stack, threshold = (result.stack, result.threshold) if result else (search(config.threshold), config.threshold)
    seconds = time.perf_counter() - started
    apply_stack(
        model,
        stack,
        method=config.method,
        operator=config.operator,
        similarity=config.similarity,
        threshold=threshold,
        target_layers=target,
    )
    return MergeResult(stack, threshold, result, evaluator.evaluations, seconds)


def _search_at(model: PreTrainedModel, evaluator: CachedEvaluator, config: MergeConfig, threshold: float) -> LayerStack:
    stack = LayerStack.initial(decoder_layers(model), config.operator)
    options = getattr(config, config.method)  # each method's options live in the field of the same name
    return MERGE_METHODS.get(config.method)(stack, evaluator, threshold, options)
