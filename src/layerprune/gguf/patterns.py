"""Which GGUF architectures direct surgery supports, and llama.cpp's index-derived attention patterns.

llama.cpp does not read from the file which layers use sliding-window (or chunked) attention
for several families: its loader derives it from the layer index with
``hparams.set_swa_pattern(n)``, which marks layer ``il`` as windowed when ``il % n < n - 1``
(``src/llama-model.cpp``, ``llm_load_hparams``). Removing layers renumbers the rest, so a
removal that is not a union of whole periods shifts the pattern and llama.cpp runs the
pruned file with the wrong attention, silently. The table below is what that loader does
for each family layerprune supports (checked against llama.cpp's ``llama-model.cpp``):

- ``gemma2`` and ``gpt-oss``: period 2; ``cohere2``, ``llama4`` (chunked), ``smollm3``
  (no RoPE every 4th layer, ``n_no_rope_layer_step = 4``): period 4; ``olmo2``: period 4 when
  the file has ``attention.sliding_window``; ``gemma3`` and ``gemma-embedding``: period 6.
  A scalar ``<arch>.attention.sliding_window_pattern`` replaces the period, as llama.cpp's
  ``get_key_or_arr`` does.
A removal keeps every kept layer's kind exactly when the removed layers before each kept
full-attention layer number a multiple of the period: removing runs of whole periods
(``period`` consecutive layers, anywhere) always does.
- ``llama``, ``qwen2``, ``qwen2moe``, ``qwen3``, ``qwen3moe``, ``gemma``, ``granite``,
  ``mistral3``: no index-derived per-layer behaviour.
- refused: ``gemma3n`` (per-layer token embeddings sized by the layer count, and the KV
  cache shared from a layer index), ``exaone4`` (sliding-window attention exists only when
  ``block_count == 64``, so any removal turns it off).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerprune.errors import UserError

PERIODS = {"gemma2": 2, "gpt-oss": 2, "cohere2": 4, "llama4": 4, "smollm3": 4, "olmo2": 4, "gemma3": 6,
           "gemma-embedding": 6}  # fmt: skip
# olmo2 derives the pattern only when the file sets a sliding window.
PERIOD_NEEDS_WINDOW = {"olmo2"}
UNIFORM = {"llama", "qwen2", "qwen2moe", "qwen3", "qwen3moe", "gemma", "granite", "mistral3"}
REFUSED = {
    "gemma3n": "its per-layer token embeddings are sized by the layer count and its KV sharing starts at a layer index",
    "exaone4": "llama.cpp turns sliding-window attention on only when block_count is 64, so any removal turns it off",
}


@dataclass(frozen=True)
class AttentionPattern:
    """llama.cpp's per-layer pattern for one file: ``period`` 0 means none (every layer alike)."""

    architecture: str
    period: int

    def kind(self, index: int) -> str:
        if self.period <= 1:
            return "uniform"
        return "sliding" if index % self.period < self.period - 1 else "full"

    def describe(self) -> str:
        return f"{self.architecture}: every {_ordinal(self.period)} layer is full attention, the rest sliding-window"


def attention_pattern(architecture: str, metadata: dict) -> AttentionPattern:
    """The pattern llama.cpp derives for ``architecture``; a :class:`UserError` for families it refuses or
    layerprune has not checked. ``metadata`` maps GGUF keys to values."""
    if architecture in REFUSED:
        raise UserError(f"direct GGUF surgery does not support {architecture}: {REFUSED[architecture]}")
    if architecture in UNIFORM:
        return AttentionPattern(architecture, 0)
    if architecture not in PERIODS:
        known = ", ".join(sorted(UNIFORM | set(PERIODS)))
        raise UserError(
            f"direct GGUF surgery does not support architecture {architecture!r} (llama.cpp's per-layer rules "
            f"for it are unchecked); supported: {known}. Prune to a directory instead (--output DIR)"
        )
    if architecture in PERIOD_NEEDS_WINDOW and not metadata.get(f"{architecture}.attention.sliding_window"):
        return AttentionPattern(architecture, 0)
    override = metadata.get(f"{architecture}.attention.sliding_window_pattern")
    period = override if isinstance(override, int) else PERIODS[architecture]
    return AttentionPattern(architecture, int(period))


def check_removal(pattern: AttentionPattern, num_layers: int, removed: list[int]) -> None:
    """Refuse a removal after which some kept layer would get another attention kind from llama.cpp."""
    kept = [index for index in range(num_layers) if index not in set(removed)]
    moved = [(old, new) for new, old in enumerate(kept) if pattern.kind(old) != pattern.kind(new)]
    if not moved:
        return
    old, new = moved[0]
    raise UserError(
        f"removing layers {removed} breaks llama.cpp's attention pattern ({pattern.describe()}, derived from "
        f"the layer index): layer {old} ({pattern.kind(old)}) would become layer {new} ({pattern.kind(new)}). "
        f"Remove runs of {pattern.period} consecutive layers instead (whole periods), e.g. "
        f"{_alternative(pattern.period, num_layers, removed)}, or let the metric choose them with --whole-periods "
        "(select.whole_periods: true in a recipe)"
    )


def whole_periods(order: list[int], count: int, period: int, num_layers: int) -> list[int]:
    """``count // period`` non-overlapping runs of ``period`` consecutive layers to remove, ranked by ``order``.

    Removing ``period`` consecutive layers shifts every later layer by one whole period, so
    llama.cpp gives each kept layer its old attention kind. ``order`` is the metric's ranking
    of the candidate layers (most removable first); a run's rank is the sum of its layers'
    ranks (ties: the deeper run), and runs are taken best first, so the metric chooses which
    go. Runs holding a layer that is not a candidate (``exclude_first``/``exclude_last``) stay.
    """
    if count < period:
        raise UserError(f"--whole-periods removes runs of {period} layers: remove at least {period}")
    rank = {layer: position for position, layer in enumerate(order)}
    runs = [range(start, start + period) for start in range(num_layers - period + 1)]
    runs = [run for run in runs if all(layer in rank for layer in run)]
    chosen: list[int] = []
    for run in sorted(runs, key=lambda run: (sum(rank[layer] for layer in run), -run.start)):
        if len(chosen) < count // period * period and not set(run) & set(chosen):
            chosen.extend(run)
    if len(chosen) < count // period * period:
        raise UserError(f"only {len(chosen) // period} runs of {period} candidate layers fit, not {count // period}")
    return sorted(chosen)


def whole_period_removal(
    indices: list[int], details: dict[str, Any], period: int, num_layers: int, exclude_first: int, exclude_last: int
) -> list[int]:
    """The metric's choice ``indices`` made into whole periods (:func:`whole_periods`), ranked by its scores.

    ``details`` is the selection's record (``method``, ``scores``); it gains ``whole_periods`` and
    the metric's own choice, ``metric_choice``. A period ≤ 1 (uniform attention) keeps ``indices``.
    """
    from layerprune.metrics import LayerScores

    if period <= 1:
        return indices
    order = LayerScores(details["method"], details["scores"]).ranking(exclude_first, exclude_last)
    chosen = whole_periods(order, len(indices), period, num_layers)
    details.update(whole_periods=period, metric_choice=indices)
    return chosen


def _alternative(period: int, num_layers: int, removed: list[int]) -> str:
    """``--layers`` naming the run of whole periods that overlaps the requested removal most (period-aligned first)."""
    length = min(max(1, round(len(removed) / period)) * period, num_layers - period)
    starts = range(0, num_layers - length + 1)
    best = max(starts, key=lambda s: (len(set(range(s, s + length)) & set(removed)), s % period == 0, -s))
    return f"--layers {best}-{best + length - 1}"


def _ordinal(n: int) -> str:
    return {2: "2nd", 3: "3rd"}.get(n, f"{n}th")
