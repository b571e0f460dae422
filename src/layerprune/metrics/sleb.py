"""SLEB: iterative greedy removal of the layer that hurts calibration NLL least (Song et al. 2024)."""

from __future__ import annotations

from transformers import PreTrainedModel

from layerprune.errors import UserError
from layerprune.metrics.base import LayerScores, ScoringContext, candidate_layers, register_metric, scans_removals
from layerprune.metrics.layerwise import layerwise_pass
from layerprune.metrics.removal import RemovalSearch
from layerprune.models import num_layers


def default_sleb_steps(count: int) -> int:
    """A quarter of the layers, at least one."""
    return max(1, round(count / 4))


@register_metric("sleb")
@scans_removals
def sleb(model: PreTrainedModel, context: ScoringContext) -> LayerScores:
    """k times: remove argmin_j NLL(model without removed ∪ {j}); score = the step at which a layer went.

    Song et al. 2024, "SLEB: Streamlining LLMs through Redundancy Verification and
    Elimination of Transformer Blocks". ``sleb_steps`` rounds are run (default: a quarter of
    the layers); layer removed in round t scores t. The layers still left score
    ``steps + r``, r their rank by NLL in the last round, so a removal order longer than
    ``steps`` continues one-shot from there. Candidates respect ``exclude_first/last``; the
    released code also never removes the first and the last block, which
    ``sleb_exclude_ends`` (preset ``paper``) does too (those two then score last).
    Each round is one layer-wise pass with every candidate at once (round 1 is ppl's table
    when both are scored; equal to rebuilding the model per candidate, tested).
    """
    count = num_layers(model)
    ends = int(context.sleb_exclude_ends)
    candidates = candidate_layers(count, max(context.exclude_first, ends), max(context.exclude_last, ends))
    steps = context.sleb_steps or default_sleb_steps(count)
    if steps > len(candidates) or steps >= count:
        raise UserError(f"sleb cannot run {steps} steps: {len(candidates)} candidate layers of {count}")
    search = RemovalSearch(layerwise_pass(model, context, "sleb"))
    scores = [float(count + i) for i in range(count)]
    for step in range(steps):
        table = search.nll_table([i for i in candidates if i not in search.removed], f"sleb step {step + 1}/{steps}")
        chosen = min(table, key=lambda i: (table[i], i))
        scores[chosen] = float(step)
        if step + 1 < steps:
            search.remove(chosen)
    remaining = sorted((nll, i) for i, nll in table.items() if i != chosen)
    for rank, (_, layer) in enumerate(remaining):
        scores[layer] = float(steps + rank)
    return LayerScores("sleb", scores, exclude_first=ends, exclude_last=ends)
