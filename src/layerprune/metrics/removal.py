"""Calibration NLL of the model with layers removed, every candidate in one layer-wise pass (for ``ppl`` and ``sleb``).

Removing layer ``i`` leaves layers ``< i`` unchanged, so the model without ``R ∪ {i}``
shares its states with the model without ``R`` up to layer ``i``'s input. One
:class:`~layerprune.metrics.layerwise.LayerwisePass` over the layers then yields the NLL of
every candidate at once (``L − |R|`` layer loads, ``≈ L²/2`` layer forwards per batch).
A committed removal is one more layer in ``R`` for the next pass. The model is never
copied; :func:`~layerprune.execution.run_layer` runs one layer through the model's forward.
"""

from __future__ import annotations

import math

from layerprune.metrics.layerwise import LayerwisePass


class RemovalSearch:
    """Mean next-token NLL on a calibration set for "the committed removals plus one more layer"."""

    def __init__(self, passes: LayerwisePass) -> None:
        self.passes = passes
        self.removed: set[int] = set()

    @property
    def remaining(self) -> list[int]:
        return [i for i in range(self.passes.layers.num_layers) if i not in self.removed]

    def nll_table(self, candidates: list[int], description: str) -> dict[int, float]:
        """Mean NLL with each candidate removed on top of the committed removals (one pass over the layers)."""
        return self.passes.nll_table(self.removed, candidates, description)

    def remove(self, layer: int) -> None:
        """Commit the removal of ``layer`` (the next table's passes skip it)."""
        self.removed.add(layer)


def perplexity(mean_nll: float) -> float:
    return math.exp(mean_nll)
