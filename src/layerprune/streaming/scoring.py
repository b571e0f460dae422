"""Streamed scoring: every metric of :func:`layerprune.metrics.score` with one decoder layer in memory at a time.

The model is a :class:`~layerprune.streaming.layers.StreamedModel` (embeddings, final
norm and head loaded, layers on the meta device); the metrics are the in-memory ones,
whose layer-wise pass (:mod:`layerprune.metrics.layerwise`) takes each layer from the
streamed model: loaded from the shards onto ``device``, applied to every calibration
batch and every removal candidate, freed. Similarity metrics and one-layer removals
(ppl, SLEB's first round) share one pass of ``L`` layer loads; each further SLEB round is
one more pass; magnitude reads one layer at a time. Hidden states beyond
``state_budget`` bytes are memory-mapped on disk. Taylor needs the model in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from layerprune.calibration import CalibrationConfig, CalibrationSet
from layerprune.metrics import Scores, score
from layerprune.models.loading import load_tokenizer
from layerprune.provenance import set_provenance
from layerprune.streaming.layers import StreamedModel
from layerprune.streaming.surgery import open_checkpoint, source_provenance


def stream_score(
    spec: str,
    metrics: str | Sequence[str] = "all",
    calib: CalibrationConfig | CalibrationSet | str = "default",
    device: str | torch.device = "cpu",
    state_budget: int | None = None,
    cache_dir: str | Path | None = None,
    **settings: Any,
) -> Scores:
    """:func:`~layerprune.metrics.score` of ``spec``'s safetensors checkpoint, streamed layer by layer.

    ``settings`` are the :class:`~layerprune.metrics.ScoringContext` fields. The scores equal
    the in-memory ones (relative 1e-5, tested). Example::

        scores = stream_score("/models/llama-70b", ["bi", "angular", "ppl"], device="cuda")
    """
    streamed = streamed_model(spec, device, cache_dir)
    tokenizer = None if isinstance(calib, CalibrationSet) else load_tokenizer(str(streamed.checkpoint.path))
    try:
        return score(streamed.model, tokenizer, metrics, calib, layers=streamed, state_budget=state_budget, **settings)
    finally:
        streamed.checkpoint.close()


def streamed_model(spec: str, device: str | torch.device = "cpu", cache_dir: str | Path | None = None) -> StreamedModel:
    """The :class:`StreamedModel` of ``spec`` with the provenance :func:`~layerprune.models.load_model` attaches."""
    checkpoint = open_checkpoint(spec, cache_dir)
    streamed = StreamedModel(checkpoint, device)
    set_provenance(streamed.model, source_provenance(spec, checkpoint))
    return streamed
