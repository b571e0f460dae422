"""LLM-Streamline: block choice, training through the Trainer equals hand AdamW, MSE lowers the block error,
bounded memory, a standard model."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layerprune.errors import UserError
from layerprune.execution import Bypass, bypassed, capture_layer_inputs
from layerprune.merging.streamline import (
    StreamlineConfig,
    choose_block,
    replace_block,
    replacement_error,
    train_replacement,
)
from layerprune.models import decoder_layers, num_layers
from layerprune.provenance import get_provenance
from model_checks import assert_cache_consistent, assert_reloads_equal
from test_merging_models import deep_tiny
from tiny_models import token_batch


def _batches(count: int, seed: int = 0, size: int = 4, length: int = 16):
    mask = torch.ones(size, length, dtype=torch.long)
    return [(token_batch(size, length, seed=seed + i), mask) for i in range(count)]


def test_choose_block_picks_the_block_that_changes_the_state_least() -> None:
    model = deep_tiny("llama", 6)
    with torch.no_grad():  # make layers 2 and 3 near-identities: their output projections vanish
        for layer in list(decoder_layers(model))[2:4]:
            layer.self_attn.o_proj.weight.mul_(1e-4)
            layer.mlp.down_proj.weight.mul_(1e-4)
    for metric in ("cosine", "angular"):
        assert choose_block(model, _batches(2), 1, metric)[0] == 2
    assert choose_block(model, _batches(2), 1, "cosine")[1] > 0.999
    with pytest.raises(UserError):
        choose_block(model, _batches(1), 6, "cosine")


def _hand_loss(model, layer, first: int, last: int, ids: torch.Tensor, mask: torch.Tensor, train: str) -> torch.Tensor:
    """The old loop's losses, written out on a copy of the model whose layer ``first`` is ``layer``."""
    student = copy.deepcopy(model).requires_grad_(False)
    decoder_layers(student)[first] = layer
    if train == "lm":
        with bypassed(student, range(first + 1, last + 1)):
            return student(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
    outputs: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda module, args, output: outputs.append(output))
    student(input_ids=ids, attention_mask=mask)
    handle.remove()
    target = capture_layer_inputs(model, ids, mask)[last + 1]
    keep = mask.bool()
    return ((outputs[0] - target)[keep] ** 2).mean()


@pytest.mark.parametrize("train", ["mse", "lm"])
def test_trainer_steps_equal_hand_adamw_steps(train: str) -> None:
    """Two Trainer steps = two torch.optim.AdamW steps (same lr, no decay, warm-up or clipping) on the same batches."""
    model = deep_tiny("llama", 4)
    first, last, batches = 1, 2, _batches(2, seed=5)
    padded = batches[1][1].clone()
    padded[1, 10:] = 0  # padding in the second batch: it must count nowhere
    batches[1] = (batches[1][0], padded)
    layer = copy.deepcopy(decoder_layers(model)[first])
    reference = copy.deepcopy(layer).requires_grad_(True)
    losses = train_replacement(model, layer, first, last, batches, StreamlineConfig(train=train, learning_rate=1e-2))
    optimizer = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.0)
    expected = []
    for ids, mask in batches:
        loss = _hand_loss(model, reference, first, last, ids, mask, train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        expected.append(loss.item())
    assert losses == pytest.approx(expected, rel=1e-5)
    initial = decoder_layers(model)[first].state_dict()
    for name, value in reference.state_dict().items():
        # atol 1e-5: ce is logsumexp − target (models.head.logits_nll), HF's .loss is cross_entropy; their fp32
        # rounding differs by ~1e-7, which Adam's normalisation lifts to ~2e-6 on a near-zero gradient entry.
        torch.testing.assert_close(layer.state_dict()[name], value, rtol=1e-5, atol=1e-5)
        assert (value - initial[name]).abs().max() > 1e-3, name  # every tensor moved (by about lr per step)


def test_replacement_error_is_the_block_output_mse_of_an_identity_layer() -> None:
    """An identity replacement predicts x_first, so the error is mean((x_first − y_last)²) over real tokens."""
    model = deep_tiny("llama", 4)
    (ids, mask), first, last = _batches(1, seed=7)[0], 1, 2
    mask[0, 9:] = 0
    states = capture_layer_inputs(model, ids, mask)
    keep = mask.bool()
    expected = ((states[first] - states[last + 1])[keep] ** 2).mean().item()
    assert replacement_error(model, Bypass(), first, last, [(ids, mask)]) == pytest.approx(expected, rel=1e-6)
    assert replacement_error(model, decoder_layers(model)[first], first, first, [(ids, mask)]) == 0.0


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_mse_training_lowers_block_error_and_result_is_a_standard_model(family: str, tmp_path: Path) -> None:
    model = deep_tiny(family, 6)
    reference = copy.deepcopy(model)  # test-only: the untouched model to measure the block error against
    config = StreamlineConfig(num_layers=2, learning_rate=3e-3, epochs=2)
    result = replace_block(model, _batches(2), lambda: _batches(12, seed=10), config)
    first, last = result.first, result.last
    held_out = _batches(2, seed=100)
    initial = copy.deepcopy(decoder_layers(reference)[first])
    before = replacement_error(reference, initial, first, last, held_out)
    after = replacement_error(reference, decoder_layers(model)[first], first, last, held_out)
    assert after < 0.85 * before  # measured: llama 0.44, qwen3 0.75 of the initial error
    assert result.losses[-1] < result.losses[0]
    assert num_layers(model) == 4 and get_provenance(model).steps[-1]["block"] == [first, last]
    assert_reloads_equal(model, tmp_path / "streamlined")
    assert_cache_consistent(model)


def test_lm_training_runs_and_lowers_the_loss() -> None:
    model = deep_tiny("llama", 4)
    config = StreamlineConfig(num_layers=1, train="lm", learning_rate=3e-3, epochs=3)
    repeated = _batches(2, seed=3)
    result = replace_block(model, repeated, lambda: repeated, config)
    assert result.losses[-1] < result.losses[0] and num_layers(model) == 3
    assert all(p.requires_grad for p in model.parameters())  # frozen parameters restored


_MEMORY_PROBE = """
import json, resource, sys, torch
sys.path[:0] = {paths}
from tiny_models import tiny_model, token_batch
from layerprune.merging.streamline import StreamlineConfig, train_replacement
from layerprune.models import decoder_layers
torch.set_num_threads(1)
model = tiny_model("llama", hidden_size=256, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2)
layer = decoder_layers(model)[1]
mask = torch.ones(16, 256, dtype=torch.long)
batches = ((token_batch(16, 256, seed=i), mask) for i in range({count}))
train_replacement(model, layer, 1, 2, batches, StreamlineConfig(learning_rate=1e-4, batch_size=16))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(before / 1024))
"""


def _peak_mib(count: int) -> float:
    paths = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "src")]
    code = _MEMORY_PROBE.format(paths=paths, count=count)
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def test_mse_training_peak_memory_does_not_grow_with_batches() -> None:
    # each batch's (input, output) pair is 2 × 16 × 256 × 256 floats = 8 MiB: caching 38 more would add 304 MiB;
    # measured (Trainer, batch_size 16): 2, 12, 40, 80 batches → 696, 740, 757, 757 MiB (noise about ±30 MiB)
    few, many = _peak_mib(2), _peak_mib(40)
    assert many - few < 100, (few, many)
