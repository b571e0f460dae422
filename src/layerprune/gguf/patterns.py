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
- ``llama``, ``qwen2``, ``qwen2moe``, ``qwen3``, ``qwen3moe``, ``gemma``, ``granite``,
  ``mistral3``: no index-derived per-layer behaviour.
- refused: ``gemma3n`` (per-layer token embeddings sized by the layer count, and the KV
  cache shared from a layer index), ``exaone4`` (sliding-window attention exists only when
  ``block_count == 64``, so any removal turns it off).
"""

from __future__ import annotations

from dataclasses import dataclass

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
        f"Remove whole periods of {pattern.period} instead, e.g. {_alternative(pattern.period, num_layers, removed)}"
        f", or --whole-periods to let the metric choose them"
    )


def whole_periods(order: list[int], count: int, period: int, num_layers: int, protected: set[int]) -> list[int]:
    """The ``count // period`` whole periods ``[p·n, (p+1)·n)`` to remove, ranked by ``order``.

    ``order`` is the metric's removal order (most removable first); a period's rank is the
    mean rank of its layers, so the metric chooses which periods go. Periods holding a
    ``protected`` layer (``exclude_first``/``exclude_last``) or running past the last layer stay.
    """
    if count < period:
        raise UserError(f"--whole-periods removes whole periods of {period} layers: remove at least {period}")
    rank = {layer: position for position, layer in enumerate(order)}
    periods = [list(range(start, start + period)) for start in range(0, num_layers - period + 1, period)]
    allowed = [p for p in periods if not protected & set(p) and all(layer in rank for layer in p)]
    chosen = sorted(allowed, key=lambda p: sum(rank[layer] for layer in p))[: count // period]
    if len(chosen) < count // period:
        raise UserError(f"only {len(allowed)} whole periods of {period} layers may be removed, not {count // period}")
    return sorted(layer for p in chosen for layer in p)


def _alternative(period: int, num_layers: int, removed: list[int]) -> str:
    """``--layers`` naming the whole periods that overlap the requested removal most (as many as it spans)."""
    wanted = max(1, round(len(removed) / period))
    starts = range(0, num_layers - period + 1, period)
    best = sorted(starts, key=lambda s: -len(set(range(s, s + period)) & set(removed)))[:wanted]
    return "--layers " + ",".join(f"{s}-{s + period - 1}" for s in sorted(best))


def _ordinal(n: int) -> str:
    return {2: "2nd", 3: "3rd"}.get(n, f"{n}th")
