"""LaCo, Layer Collapse (Yang et al., 2024, "LaCo: Large Language Model Pruning via Layer Collapse"), Algorithm 1.

Parameters (paper's names): ``C`` layers fused per merge (the base ``l`` and the ``C − 1``
layers above it), the interval ``I`` by which ``l`` jumps down after a successful merge,
the lowest and highest layers ``L``/``H`` that may take part, and the threshold ``T``.

Starting at ``l = H − C + 1`` (the top-most group that fits under ``H``), the candidate fuses
the *current* layers ``l … l + C − 1`` into layer ``l``, never above the layer holding ``H``; if the
similarity of its final hidden states to the original model's is ≥ T it becomes the current
model and ``l ← min(l − I, |M*| − C)``, else ``l ← l − 1``; stop when ``l < L``. With
``I < C`` a later group may contain an already merged layer, which is merged again, as in
the paper and its code. (A candidate passes at ≥ T; the paper writes > T. The paper's
``|M*| − C`` bound alone can pull a group above ``H`` after merges; here it is clipped at ``H``.)
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.merging.candidates import StackScorer
from layerprune.merging.stack import LayerStack


@strict_config
class LacoConfig:
    """LaCo's C, I, L and H (T is passed separately); ``highest`` None means the last layer."""

    merge_layers: Annotated[int, Field(ge=2)] = 4
    interval: Annotated[int, Field(ge=1)] = 2
    lowest: Annotated[int, Field(ge=0)] = 1
    highest: Annotated[int, Field(ge=0)] | None = None

    def validate(self, num_layers: int) -> int:
        """Check the options against the model; return H resolved."""
        highest = num_layers - 1 if self.highest is None else self.highest
        if self.merge_layers < 2:
            raise UserError("LaCo's merge_layers (C) must be at least 2")
        if self.interval < 1:
            raise UserError("LaCo's interval (I) must be at least 1")
        if not 0 <= self.lowest <= highest < num_layers:
            raise UserError(f"LaCo needs 0 ≤ lowest ≤ highest < {num_layers}, got {self.lowest}, {highest}")
        return highest


def laco_search(stack: LayerStack, score: StackScorer, threshold: float, config: LacoConfig) -> LayerStack:
    """Run LaCo on an unmerged ``stack``; return the merged stack."""
    highest = config.validate(len(stack))
    layer = highest - config.merge_layers + 1
    while layer >= config.lowest:
        candidate = stack.merge(layer, min(layer + config.merge_layers - 1, stack.current_index(highest)))
        similarity = score(candidate)
        if similarity >= threshold:
            stack = candidate.scored(similarity)
            layer = min(layer - config.interval, len(stack) - config.merge_layers)
        else:
            layer -= 1
    return stack
