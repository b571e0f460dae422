"""Sliding Layer Merging (SLM; Ding et al., 2025, "A sliding layer merging method for efficient
depth-wise pruning in LLMs").

The window's top ``high`` starts at the last layer (the one below it when the last layer
is protected, as in the paper's code). The window ``[low, high]`` grows downward, one layer
at a time, while the candidate that fuses it (base: layer ``low``) keeps the similarity of
its final hidden states to the original model's ≥ the threshold. The largest passing window
is committed; the search continues with ``high`` = the layer just below it. When not even
``[high − 1, high]`` passes, ``high`` moves down by one. The candidate always contains the
merges committed above, so the similarity is that of the whole merged model (as in the code).

Differences from the released code (``SLM.py``):

* A window that still passes when it reaches layer 0 is committed. The code's loop ends
  there without committing it.
* After a commit the code scores a one-layer "window" and, if the merges above already fall
  below the threshold, commits an empty range forever; here the next window has two layers.
* A candidate passes at similarity ≥ threshold (the code: >).
"""

from __future__ import annotations

from layerprune.config import strict_config
from layerprune.merging.candidates import StackScorer
from layerprune.merging.stack import LayerStack


@strict_config
class SlmConfig:
    """SLM's options besides the threshold; ``protect_last`` keeps the last layer out of every window (paper's code)."""

    protect_last: bool = True


def slm_search(stack: LayerStack, score: StackScorer, threshold: float, config: SlmConfig) -> LayerStack:
    """Run SLM from the top of ``stack`` (unmerged) down to layer 0; return the merged stack."""
    high = len(stack) - 1 - int(config.protect_last)
    while high >= 1:
        low, merged = _largest_passing_window(stack, score, high, threshold)
        if merged is not None:
            stack = merged
        high = low - 1 if merged is not None else high - 1
    return stack


def _largest_passing_window(
    stack: LayerStack, score: StackScorer, high: int, threshold: float
) -> tuple[int, LayerStack | None]:
    """Grow ``[low, high]`` downward while it passes; the lowest passing ``low`` and its stack (None: none passes)."""
    best: tuple[int, LayerStack | None] = (high, None)
    for low in range(high - 1, -1, -1):
        candidate = stack.merge(low, high)
        similarity = score(candidate)
        if similarity < threshold:
            break
        best = (low, candidate.scored(similarity))
    return best
