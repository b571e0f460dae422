"""One pass over the decoder layers that serves every similarity metric and every removal candidate at once.

Each decoder layer is taken once from a layer provider (:class:`ResidentLayers`: the
model's own, in memory; :class:`~layerprune.streaming.layers.StreamedModel`: loaded from
the shards onto the device and freed after) and applied to every calibration batch
before the next layer is taken. The pass follows several *streams* of hidden states:

* the base stream, the model without the committed removals ``R``;
* for each candidate ``i``, the model without ``R ∪ {i}``. Its stream equals the base
  stream up to layer ``i``'s input; it skips layer ``i``, and at every later layer
  ``j ∉ R`` it goes through layer ``j`` together with the other candidates (stacked along
  the batch dimension, :data:`STACKED_CANDIDATES` at a time).

At the end every candidate stream goes through the final norm and head:
NLL_i = Σ −log p(x_t+1 | x_≤t) of the model without ``R ∪ {i}`` (:func:`~layerprune.metrics.nll.token_nll`).
So ppl for every ``i`` costs ``L`` layer loads and ``Σ_i (L − 1 − i) ≈ L²/2`` layer
forwards per batch, and SLEB's rounds (Song et al. 2024) each cost one more pass. The base
stream's states ``x_0 … x_L`` (before the final norm, as
:func:`~layerprune.execution.capture_layer_inputs` takes them) are the similarity
statistics' input. States live in a :class:`~layerprune.metrics.states.StateStore`.
Layers run through the model's own forward (:func:`~layerprune.execution.run_layer`), so
masks, rotary embeddings and per-layer attention types are the model's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from layerprune.calibration import CalibrationSet
from layerprune.execution import bypassed, resumed_from, run_layer
from layerprune.metrics.base import METRICS, ScoringContext
from layerprune.metrics.nll import predicted_positions, token_nll
from layerprune.metrics.states import StateStore
from layerprune.models import decoder_layers

STACKED_CANDIDATES = 8
StatesFold = Callable[[int, list[torch.Tensor]], None]


class LayerProvider(Protocol):
    """Where a pass takes its layers from: ``model`` (non-layer parts ready), ``layer(i)`` and a load count."""

    model: PreTrainedModel
    device: torch.device
    loads: int

    @property
    def num_layers(self) -> int: ...

    def layer(self, index: int) -> contextlib.AbstractContextManager[torch.nn.Module]: ...


class ResidentLayers:
    """The decoder layers of a model already in memory (taking one loads nothing; ``loads`` still counts)."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.device = model.device
        self.loads = 0

    @property
    def num_layers(self) -> int:
        return len(decoder_layers(self.model))

    @contextlib.contextmanager
    def layer(self, index: int) -> Iterator[torch.nn.Module]:
        self.loads += 1
        yield decoder_layers(self.model)[index]


def layer_provider(model: PreTrainedModel, context: ScoringContext) -> LayerProvider:
    """The context's provider (a streamed model), else the model's own layers."""
    return context.layers if context.layers is not None else ResidentLayers(model)


@dataclass
class LayerwisePass:
    """Passes over the layers of one model on one calibration set; tables of finished passes are kept."""

    layers: LayerProvider
    calibration: CalibrationSet
    batch_size: int
    state_budget: int | None = None
    progress: bool = True
    tables: dict[frozenset[int], dict[int, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        device = self.layers.device
        self.batches = [(ids.to(device), mask.to(device)) for ids, mask in self.calibration.batches(self.batch_size)]
        self.tokens = int(predicted_positions(self.calibration.attention_mask).sum())

    def nll_table(self, removed: set[int], candidates: list[int], description: str) -> dict[int, float]:
        """Mean NLL of the model without ``removed ∪ {i}`` for each candidate ``i`` (one pass for the new ones)."""
        known = self.tables.setdefault(frozenset(removed), {})
        missing = [i for i in candidates if i not in known]
        if missing:
            known.update(self.run(removed, missing, description))
        return {i: known[i] for i in candidates}

    @torch.no_grad()
    def run(
        self, removed: set[int], candidates: list[int], description: str, fold: StatesFold | None = None
    ) -> dict[int, float]:
        """One pass: the mean NLL per candidate; ``fold(b, states)`` gets each batch's ``L + 1`` base states."""
        keep_states = fold is not None
        store = StateStore(self.state_budget)
        try:
            for b, (ids, mask) in enumerate(self.batches):
                store.put(("base", b), _embeddings(self.layers.model, ids, mask))
                if keep_states:
                    store.put(("state", 0, b), store.get(("base", b), self.layers.device))
            for j in tqdm(range(self.layers.num_layers), desc=description, disable=not self.progress):
                self._layer(store, j, removed, candidates, keep_states)
            for b in range(len(self.batches)) if keep_states else ():
                fold(b, self._states(store, b))
            heads = tqdm(candidates, desc=f"{description}: final norm + head", disable=not self.progress)
            return {i: self._mean_nll(store, i) for i in heads}
        finally:
            store.close()

    def _layer(self, store: StateStore, j: int, removed: set[int], candidates: list[int], keep_states: bool) -> None:
        """Advance every stream through layer ``j`` (the base stream only if ``j`` is not removed)."""
        active = [("candidate", i) for i in candidates if i < j]
        if j in removed:
            for b in range(len(self.batches)) if keep_states else ():
                store.put(("state", j + 1, b), store.get(("base", b), self.layers.device))
            return
        with self.layers.layer(j):
            for b in range(len(self.batches)):
                if j in candidates:
                    store.put(("candidate", j, b), store.get(("base", b), self.layers.device))
                streams = [*active, ("base",)]
                for start in range(0, len(streams), STACKED_CANDIDATES):
                    self._advance(store, j, b, streams[start : start + STACKED_CANDIDATES])
                if keep_states:
                    store.put(("state", j + 1, b), store.get(("base", b), self.layers.device))

    def _advance(self, store: StateStore, j: int, b: int, streams: list[tuple]) -> None:
        """Layer ``j`` on the stacked states of ``streams`` for batch ``b``."""
        ids, mask = self.batches[b]
        keys = [(*stream, b) for stream in streams]
        stacked = torch.cat([store.get(key, self.layers.device) for key in keys])
        count = len(keys)
        _, output = run_layer(self.layers.model, j, ids.repeat(count, 1), mask.repeat(count, 1), stacked)
        for key, part in zip(keys, output.split(ids.shape[0]), strict=True):
            store.put(key, part)

    def _mean_nll(self, store: StateStore, candidate: int) -> float:
        model, total = self.layers.model, 0.0
        for b, (ids, mask) in enumerate(self.batches):
            state = store.get(("candidate", candidate, b), self.layers.device)
            with resumed_from(model, self.layers.num_layers, state):
                total += float(token_nll(model, ids, mask)[0])
        return total / self.tokens

    def _states(self, store: StateStore, b: int) -> list[torch.Tensor]:
        return [store.get(("state", s, b), self.layers.device) for s in range(self.layers.num_layers + 1)]


def _embeddings(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Layer 0's input (the model's embedding output), without running layer 0."""
    with bypassed(model, [0]):
        return run_layer(model, 0, input_ids, attention_mask)[0]


def layerwise_pass(model: PreTrainedModel, context: ScoringContext, metric: str) -> LayerwisePass:
    """The pass shared by the metrics of one scoring run (so ppl's table serves SLEB's first round)."""
    if "layerwise" not in context.cache:
        calibration = context.require_calibration(metric)
        provider = layer_provider(model, context)
        context.cache["layerwise"] = LayerwisePass(
            provider, calibration, context.batch_size, context.state_budget, context.progress
        )
    return context.cache["layerwise"]


def removal_planned(context: ScoringContext) -> bool:
    """Whether a metric of this run scores one-layer removals (then the similarity pass computes them too)."""
    return any(getattr(METRICS.get(name), "scans_removals", False) for name in context.plan)
