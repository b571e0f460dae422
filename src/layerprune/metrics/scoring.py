"""``score``: run several metrics on one model with one calibration set and one similarity pass."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.calibration import CalibrationConfig, CalibrationSet, load_calibration
from layerprune.errors import UserError
from layerprune.metrics.base import METRICS, ScoringContext, needs_calibration
from layerprune.metrics.scores import Scores
from layerprune.metrics.similarity import SimilarityStatistics
from layerprune.metrics.sleb import default_sleb_steps
from layerprune.models import model_source, num_layers

ALL = "all"


def resolve_metric_names(metrics: str | Sequence[str]) -> list[str]:
    """``"all"``, ``"bi,angular"`` or a list → registered metric names (unknown names raise ``UserError``)."""
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    names = [name for name in names if name]
    if names == [ALL]:
        return METRICS.names()
    if not names:
        raise UserError(f"no metrics given; choose from {', '.join(METRICS.names())} or '{ALL}'")
    for name in names:
        METRICS.get(name)
    return list(dict.fromkeys(names))


def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    metrics: str | Sequence[str] = ALL,
    calib: CalibrationConfig | CalibrationSet | str = "default",
    **settings: Any,
) -> Scores:
    """Score every layer of ``model`` with each of ``metrics``; lower = remove first.

    ``calib`` is a source name/path (drawn with the defaults of :class:`CalibrationConfig`
    and ``settings["seed"]``), a :class:`CalibrationConfig`, or a ready
    :class:`CalibrationSet`; it is loaded only if some metric needs data. ``settings`` are
    :class:`ScoringContext` fields (``batch_size``, ``angular_tokens``, ``sleb_steps``,
    ``exclude_first``, ``exclude_last``, ``seed``, ``progress``). All similarity metrics share
    one forward pass. Example::

        scores = score(model, tokenizer, ["bi", "angular", "ppl"], calib="default")
        scores.removal_order("bi", 8)
    """
    names = resolve_metric_names(metrics)
    context = _context(settings)
    context.plan = tuple(names)
    if any(needs_calibration(name) for name in names):
        context.calibration = _calibration_set(tokenizer, calib, context.seed)
    results = {name: METRICS.get(name)(model, context) for name in names}
    return Scores(
        model=model_source(model),
        num_layers=num_layers(model),
        metrics=results,
        calibration=context.calibration.config if context.calibration else None,
        similarity=_similarity_matrices(context),
        settings=_settings_record(context, num_layers(model), names),
    )


def _context(settings: dict[str, Any]) -> ScoringContext:
    known = {f.name for f in dataclasses.fields(ScoringContext)} - {"calibration", "cache", "options", "plan"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserError(f"unknown scoring settings {unknown}; valid: {', '.join(sorted(known))}")
    return ScoringContext(**settings)


def _calibration_set(
    tokenizer: PreTrainedTokenizerBase | None, calib: CalibrationConfig | CalibrationSet | str, seed: int
) -> CalibrationSet:
    if isinstance(calib, CalibrationSet):
        return calib
    if tokenizer is None:
        raise UserError("data metrics need a tokenizer (or a ready CalibrationSet as calib)")
    config = calib if isinstance(calib, CalibrationConfig) else CalibrationConfig(source=calib, seed=seed)
    return load_calibration(tokenizer, config)


def _similarity_matrices(context: ScoringContext) -> dict[str, list[list[float]]]:
    statistics = next((v for v in context.cache.values() if isinstance(v, SimilarityStatistics)), None)
    if statistics is None:
        return {}
    return {"cosine": statistics.cosine_matrix().tolist(), "cka": statistics.cka_matrix().tolist()}


def _settings_record(context: ScoringContext, count: int, names: list[str]) -> dict[str, Any]:
    record = {
        "metrics": names,
        "seed": context.seed,
        "batch_size": context.batch_size,
        "angular_tokens": context.angular_tokens,
        "exclude_first": context.exclude_first,
        "exclude_last": context.exclude_last,
        "preset": context.preset,
        "sleb_exclude_ends": context.sleb_exclude_ends,
        "magnitude_weights_only": context.magnitude_weights_only,
    }
    if "sleb" in names:
        record["sleb_steps"] = context.sleb_steps or default_sleb_steps(count)
    return record
