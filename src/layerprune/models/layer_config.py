"""Per-layer config rules: what a decoder config must say after only the layers ``kept`` remain.

:func:`slice_layer_config` is a pure function on the decoder's config *dict* (the
``config.json`` form, or the ``text_config`` entry of a composite model), so it applies to a
model's config and to a ``config.json`` on disk alike. In order:

1. Fields that derive a layer's kind from its index are made explicit, then renumbered:
   ``decoder_sparse_step`` + ``mlp_only_layers`` (MoE on layer ``i`` iff ``i ∉ mlp_only`` and
   ``(i + 1) mod step = 0``) become ``mlp_only_layers`` = every dense layer with step 1;
   ``first_k_dense_replace = k`` becomes the number of kept layers below ``k``, and
   ``num_kv_shared_layers`` the number of kept layers among the sharing ones; a repeating
   ``block_types`` pattern becomes one entry per layer.
2. Fields that name layers by index (``mlp_only_layers``, ``attn_layer_indices``,
   ``full_attn_idxs``, ``moe_layers``, …) keep the kept indices, renumbered ``0..n-1``; so do
   the keys of transformers' sparse ``per_layer_config`` overrides (Gemma 4 and others).
3. Every other list with one entry per layer (``layer_types``, ``no_rope_layers``, …) is sliced.
4. The layer count is set, and a depth scale that divides by it is rescaled to keep each
   kept layer's math (MiniCPM's residual factor ``scale_depth / √L``).

:func:`refuse_unkeepable` raises :class:`~layerprune.errors.UserError` where no config can
keep the semantics (a kept layer would read the KV cache of a removed one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from layerprune.errors import UserError

LAYER_COUNT_KEYS = ("decoder_layers", "num_decoder_layers", "num_hidden_layers", "n_layer", "num_layers", "n_layers")
INDEX_FIELDS = (
    "mlp_only_layers",
    "attn_layer_indices",
    "full_attn_idxs",
    "moe_layers",
    "cross_attention_layers",
    "local_layer_ids",
    "kv_source_layers",
)
_NOT_PER_LAYER = {"architectures", "per_layer_config"}


def slice_layer_config(
    config: dict[str, Any],
    kept: Sequence[int],
    count_key: str,
    index_fields: Sequence[str] = (),
    count: int | None = None,
) -> dict[str, Any]:
    """A new decoder-config dict for the model made of the layers ``kept`` (old indices, ascending).

    ``count`` (the old layer count) is read from ``config[count_key]`` unless given; an empty
    ``count_key`` means the family derives the count from its per-layer lists.
    """
    kept = list(kept)
    count = config[count_key] if count is None else count
    result = _explicit_layer_kinds(dict(config), count)
    renumber = {old: new for new, old in enumerate(kept)}
    index_keys = {*INDEX_FIELDS, *index_fields}
    for key in index_keys:
        if isinstance(result.get(key), list | tuple):
            result[key] = [renumber[i] for i in result[key] if i in renumber]
    if "first_k_dense_replace" in result and isinstance(result["first_k_dense_replace"], int):
        result["first_k_dense_replace"] = sum(i < config["first_k_dense_replace"] for i in kept)
    if result.get("num_kv_shared_layers"):
        result["num_kv_shared_layers"] = sum(i >= count - config["num_kv_shared_layers"] for i in kept)
    if result.get("per_layer_config"):
        result["per_layer_config"] = _renumbered_overrides(result["per_layer_config"], renumber)
    if isinstance(result.get("scale_depth"), int | float) and count_key:  # MiniCPM: residual × scale_depth/√L
        result["scale_depth"] = result["scale_depth"] * math.sqrt(len(kept) / count)
    for key in per_layer_keys(result, count, index_keys):
        result[key] = type(result[key])(result[key][i] for i in kept)
    if count_key:
        result[count_key] = len(kept)
    for key in LAYER_COUNT_KEYS:  # a second count that is a multiple (LongCat-Flash: 2 sublayers per layer)
        value = result.get(key)
        if key != count_key and isinstance(value, int) and value > count and value % count == 0:
            result[key] = value // count * len(kept)
    return result


def per_layer_keys(config: dict[str, Any], count: int, skip: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Keys whose value is a list with one entry per layer (token-id lists and index lists excluded)."""
    return [
        key
        for key, value in config.items()
        if isinstance(value, list | tuple)
        and len(value) == count
        and key not in _NOT_PER_LAYER | set(skip)
        and not key.endswith(("token_id", "token_ids"))
        and not key.startswith("_")
    ]


def _explicit_layer_kinds(config: dict[str, Any], count: int) -> dict[str, Any]:
    """Rewrite ``decoder_sparse_step`` (+ ``mlp_only_layers``) as an explicit ``mlp_only_layers`` list,
    and a repeating ``block_types`` pattern (RecurrentGemma) as one entry per layer."""
    pattern = config.get("block_types")
    if isinstance(pattern, list | tuple) and pattern and len(pattern) != count:
        config["block_types"] = [pattern[i % len(pattern)] for i in range(count)]
    step = config.get("decoder_sparse_step")
    if isinstance(step, int) and step > 1 and "mlp_only_layers" in config:
        listed = set(config.get("mlp_only_layers") or ())
        config["mlp_only_layers"] = [i for i in range(count) if i in listed or (i + 1) % step != 0]
        config["decoder_sparse_step"] = 1
    return config


def _renumbered_overrides(overrides: dict, renumber: dict[int, int]) -> dict[int, Any]:
    return {renumber[int(key)]: value for key, value in overrides.items() if int(key) in renumber}


def refuse_unkeepable(config: dict[str, Any], kept: Sequence[int], count: int, family: str) -> None:
    """Raise where a kept layer would read state that a removed layer writes (no config can keep that).

    * ``num_kv_shared_layers = s``: each of the last ``s`` layers reads the KV cache of the last
      earlier layer of its attention type (Gemma 3n, Gemma 4);
    * ``indexer_types``: a ``"shared"`` layer reuses the top-k of the last earlier ``"full"``
      indexer layer (DeepSeek sparse attention in GLM-5, HY v4).
    """
    shared = config.get("num_kv_shared_layers") or 0
    if shared:
        types = config.get("layer_types") or ["attention"] * count
        first = count - shared
        readers = {j: _last_before(types, first, types[j]) for j in kept if j >= first}
        _refuse_removed_sources(readers, kept, family, "num_kv_shared_layers: reads the KV cache of")
    indexers = config.get("indexer_types")
    if isinstance(indexers, list | tuple) and len(indexers) == count:
        full = ["full" if kind == "full" else f"-{i}" for i, kind in enumerate(indexers)]
        readers = {j: _last_before(full, j, "full") for j in kept if indexers[j] == "shared"}
        _refuse_removed_sources(readers, kept, family, "indexer_types: reuses the top-k indices of")


def _refuse_removed_sources(readers: dict[int, int | None], kept: Sequence[int], family: str, what: str) -> None:
    lost = {reader: source for reader, source in readers.items() if source is not None and source not in kept}
    if lost:
        reader, source = next(iter(lost.items()))
        raise UserError(
            f"{family}: kept layer {reader} ({what} layer {source}), which would be removed; "
            "keep that layer or remove the layers that read it too"
        )


def _last_before(types: Sequence[str], end: int, kind: str) -> int | None:
    return max((i for i in range(end) if types[i] == kind), default=None)
