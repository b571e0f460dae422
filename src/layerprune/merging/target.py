"""Target mode: find the threshold at which a threshold search removes exactly ``K`` layers.

Neither SLM nor LaCo offers this; both only take a threshold. The number of layers removed
falls (weakly) as the threshold rises, so the threshold is found by bisection on
``[low, high]``. Every run of the search reuses the memoised similarities of the runs before
it (the evaluator caches them by merge history), so later runs cost a fraction of the first.
If no threshold gives exactly ``K`` — the count can jump past it, for example when one
window grows by two layers at once — the result says so and gives the nearest outcome on
each side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.merging.stack import LayerStack


@strict_config
class TargetConfig:
    """Bisection bounds (the similarity's range) and its budget."""

    low: float = -1.0
    high: float = 1.0
    iterations: Annotated[int, Field(ge=1)] = 30
    tolerance: Annotated[float, Field(gt=0)] = 1e-7


@dataclass
class TargetResult:
    """``stack`` removes ``stack.removed`` layers at ``threshold``; ``exact`` says whether that is ``K``.

    When not exact, ``below``/``above`` are the nearest outcomes with more/fewer layers
    removed, as ``(threshold, removed)``.
    """

    stack: LayerStack
    threshold: float
    exact: bool
    below: tuple[float, int] | None = None
    above: tuple[float, int] | None = None

    def describe(self, target: int) -> str:
        if self.exact:
            return f"threshold {self.threshold:.6f} removes exactly {target} layers"
        sides = []
        if self.below:
            sides.append(f"threshold {self.below[0]:.6f} removes {self.below[1]}")
        if self.above:
            sides.append(f"threshold {self.above[0]:.6f} removes {self.above[1]}")
        return f"no threshold removes exactly {target} layers; nearest: " + "; ".join(sides)


def search_for_count(search: Callable[[float], LayerStack], target: int, config: TargetConfig) -> TargetResult:
    """Bisect the threshold until ``search(threshold)`` removes ``target`` layers.

    The bounds themselves are searched only if the bisection never sees a side (at the low
    bound every candidate passes, which is the most expensive search of all).
    """
    low, high = config.low, config.high
    at_low: LayerStack | None = None
    at_high: LayerStack | None = None
    for _ in range(config.iterations):
        if high - low <= config.tolerance:
            break
        middle = (low + high) / 2
        result = search(middle)
        if result.removed == target:
            return TargetResult(result, middle, exact=True)
        if result.removed > target:
            low, at_low = middle, result
        else:
            high, at_high = middle, result
    return _nearest(search, target, config, (low, at_low), (high, at_high))


def _nearest(
    search: Callable[[float], LayerStack],
    target: int,
    config: TargetConfig,
    below: tuple[float, LayerStack | None],
    above: tuple[float, LayerStack | None],
) -> TargetResult:
    """No threshold hit ``target``: the outcomes on both sides, searching a bound that was never seen."""
    (low, at_low), (high, at_high) = below, above
    at_low = at_low or search(low)
    at_high = at_high or search(high)
    if at_low.removed < target:
        raise UserError(f"cannot remove {target} layers: even threshold {low} removes only {at_low.removed}")
    for stack, threshold in ((at_low, low), (at_high, high)):
        if stack.removed == target:
            return TargetResult(stack, threshold, exact=True)
    nearest, threshold = (at_low, low) if at_low.removed - target <= target - at_high.removed else (at_high, high)
    return TargetResult(nearest, threshold, exact=False, below=(low, at_low.removed), above=(high, at_high.removed))
