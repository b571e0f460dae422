"""The surgery gate on one causal-LM family, as a function (used by the matrix test and the README table script).

:func:`gate` builds the family's tiny model (``tiny_families``), removes layers 1 and 2 of 4
and checks, in order:

1. the pruned model's logits equal the dense model's with layers 1 and 2 bypassed
   (``execution.bypassed``), and differ from the dense model's;
2. every per-layer config list of the dense model, sliced by the kept layers, is what the
   pruned config holds (and what the reloaded config holds);
3. ``save_model`` → ``AutoModelForCausalLM.from_pretrained`` gives equal logits;
4. decoding token by token with the cache equals the full recompute.

It returns ``"pass"``, ``"refused: <reason>"`` (surgery raised a :class:`UserError`),
``"no-build: <error>"`` (the tiny model does not build or run) or ``"fail: <check>: <error>"``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from layerprune.errors import UserError
from layerprune.execution import bypassed
from layerprune.models import decoder_config, decoder_layers, get_architecture
from layerprune.models.layer_config import INDEX_FIELDS, per_layer_keys
from layerprune.saving import save_model
from layerprune.surgery import config_fields, remove_layers
from tiny_families import tiny_family_model

REMOVALS = ([1, 2], [2, 3], [0, 1])
ATOL = 1e-4


def build(model_type: str) -> PreTrainedModel:
    """The tiny model, with its weights jittered so that no layer is an identity at initialisation."""
    model = tiny_family_model(model_type)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.is_floating_point():
                parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    model(_ids(1, 4))
    return model


def gate(model_type: str) -> str:
    """The family's outcome (see the module docstring)."""
    try:
        dense = build(model_type)
    except Exception as error:
        return f"no-build: {type(error).__name__}"
    refusals = []
    for removed in REMOVALS:
        try:
            pruned = remove_layers(build(model_type), removed)
        except UserError as error:
            refusals.append(str(error))
            continue
        return _checks(dense, pruned, removed)
    return f"refused: {refusals[0]}"


def _checks(dense: PreTrainedModel, pruned: PreTrainedModel, removed: list[int]) -> str:
    kept = [i for i in range(len(decoder_layers(dense))) if i not in removed]
    checks = (("bypass", _check_bypass), ("fields", _check_fields), ("reload", _check_reload), ("cache", _check_cache))
    for name, check in checks:
        try:
            check(dense, pruned, removed, kept)
        except Exception as error:
            return f"fail: {name}: {type(error).__name__}: {str(error)[:160]}"
    return "pass"


def _ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 96, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _check_bypass(dense: PreTrainedModel, pruned: PreTrainedModel, removed: list[int], kept: list[int]) -> None:
    ids = _ids(2, 10)
    with bypassed(dense, removed):
        expected = dense(ids, use_cache=False).logits
    actual = pruned(ids, use_cache=False).logits
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)
    assert not torch.allclose(actual, dense(ids, use_cache=False).logits, atol=1e-5), "removing layers changed nothing"


def _check_fields(dense: PreTrainedModel, pruned: PreTrainedModel, removed: list[int], kept: list[int]) -> None:
    arch = get_architecture(dense)
    before, after = config_fields(decoder_config(dense)), config_fields(decoder_config(pruned))
    skip = {*INDEX_FIELDS, *arch.layer_index_fields}
    for key in per_layer_keys(before, len(decoder_layers(dense)), skip):
        assert list(after[key]) == [before[key][i] for i in kept], f"{key} not sliced"
    count = after[arch.layer_count_key] if arch.layer_count_key else decoder_config(pruned).num_hidden_layers
    assert count == len(kept) == len(decoder_layers(pruned))


@torch.no_grad()
def _check_reload(dense: PreTrainedModel, pruned: PreTrainedModel, removed: list[int], kept: list[int]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        save_model(pruned, None, Path(directory) / "out")
        reloaded = _reload(pruned, Path(directory) / "out")
    ids = _ids(2, 10, seed=5)
    torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits, atol=ATOL, rtol=0)
    saved, loaded = config_fields(decoder_config(pruned)), config_fields(decoder_config(reloaded))
    for key in [*per_layer_keys(saved, len(kept)), "per_layer_config"]:
        assert _plain(loaded.get(key)) == _plain(saved.get(key)), f"{key} changed on reload"


def _reload(model: PreTrainedModel, directory: Path) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained``; the model's own class where Auto does not map its config (Emu3)."""
    try:
        return AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    except ValueError as error:
        if "Unrecognized configuration class" not in str(error):
            raise
        return type(model).from_pretrained(directory, attn_implementation="eager").eval()


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


@torch.no_grad()
def _check_cache(dense: PreTrainedModel, pruned: PreTrainedModel, removed: list[int], kept: list[int]) -> None:
    """Cached decoding of the pruned model equals its full recompute.

    Where the family's own cache is inexact at tiny sizes (the dense model fails the same
    comparison: Bamba's chunked scan, DeepSeek V3.2's top-k indexer, Moshi, ProphetNet,
    CPM-Ant), the pruned model's cached decoding must equal the dense model's with the
    removed layers bypassed instead. Families without a cache (GPT-1, XLNet) or whose cache
    does not run at tiny sizes (CPM-Ant) are skipped.
    """
    ids = _ids(1, 8, seed=6)
    try:
        dense_cached = _cached_logits(dense, ids)
    except RuntimeError:  # the family's own cache does not run at tiny sizes (CPM-Ant)
        return
    if dense_cached is None:
        return
    try:
        torch.testing.assert_close(dense_cached, dense(ids, use_cache=False).logits, atol=ATOL, rtol=0)
    except AssertionError:
        with bypassed(dense, removed):
            expected = _cached_logits(dense, ids)
    else:
        expected = pruned(ids, use_cache=False).logits
    torch.testing.assert_close(_cached_logits(pruned, ids), expected, atol=ATOL, rtol=0)


def _cached_logits(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor | None:
    """A 5-token prefix with the cache, then 3 single-token steps; None when the model returns no cache."""
    step = model(ids[:, :5], use_cache=True)
    if getattr(step, "cache", None) is None:
        return None
    cache, logits = step.cache, [step.logits]
    for position in range(5, ids.shape[1]):
        step = model(ids[:, position : position + 1], cache=cache, use_cache=True)
        cache = step.cache
        logits.append(step.logits)
    return torch.cat(logits, dim=1)
