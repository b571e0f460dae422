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

``rule="notebook"`` follows the released notebook instead, as we read it: the first group is
``H − C … H − 1`` (it starts at ``l = H − C`` and fuses ``l … l + C − 1``, so layer ``H`` itself
is never in the first group); after a merge ``l ← l − I``, reset to ``|M*| − 1 − C`` only if
that falls past the end of the merged model; groups are not clipped at ``H``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.merging.candidates import StackScorer
from layerprune.merging.stack import LayerStack


@strict_config
class LacoConfig:
    """LaCo's C, I, L and H (T is passed separately); ``highest`` None means the last layer.

    ``rule``: ``ours`` (Algorithm 1 of the paper, groups clipped at H) or ``notebook`` (the
    released notebook's group bounds and reset rule; see the module docstring).
    """

    merge_layers: Annotated[int, Field(ge=2)] = 4
    interval: Annotated[int, Field(ge=1)] = 2
    lowest: Annotated[int, Field(ge=0)] = 1
    highest: Annotated[int, Field(ge=0)] | None = None
    rule: Literal["ours", "notebook"] = "ours"

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
    notebook, size = config.rule == "notebook", config.merge_layers
    layer = highest - size if notebook else highest - size + 1
    while layer >= config.lowest:
        top = len(stack) - 1 if notebook else stack.current_index(highest)
        candidate = stack.merge(layer, min(layer + size - 1, top))
        similarity = score(candidate)
        if similarity >= threshold:
            stack = candidate.scored(similarity)
            layer = _next_base(layer, len(stack), config)
        else:
            layer -= 1
    return stack


def _next_base(layer: int, count: int, config: LacoConfig) -> int:
    """The base after a successful merge: ``min(l − I, |M*| − C)`` (ours) or the notebook's reset."""
    if config.rule == "ours":
        return min(layer - config.interval, count - config.merge_layers)
    layer -= config.interval
    return count - 1 - config.merge_layers if layer >= count else layer
