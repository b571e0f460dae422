"""Cached-prefix training: compute the frozen layers' output once, then train only the layers above.

When the embeddings and decoder layers ``0..s−1`` are frozen (``partial`` with K = L − s),
the hidden state entering layer ``s`` is the same in every epoch. :class:`PrefixCache` stores
it per sample (``capture_layer_inputs`` under ``bypassed`` layers ``≥ s``, so the trained
layers are not run), and the trainer replays it with ``execution.resumed_from``: the model's
own forward runs layers ``≥ s``, the final norm and the head. Right padding keeps real tokens'
states independent of the batch they were computed in, so training equals uncached training
up to float rounding. (Dropout in the frozen layers, zero in the supported families' defaults,
would make the uncached run random and break the equality.)

Storage is one ``[tokens, hidden]`` array: in memory when it fits ``memory_budget`` bytes,
else a memory-mapped file in the checkpoint directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from layerprune.execution import bypassed, capture_layer_inputs
from layerprune.healing.data import Example, collate
from layerprune.models.architectures import num_layers

PREFIX_CACHE_FILE = "prefix_cache.f32"

logger = logging.getLogger(__name__)


class PrefixCache:
    """Hidden states entering layer ``start`` for every sample (row ``offsets[i]`` onward, ``lengths[i]`` rows)."""

    def __init__(self, start: int, storage: torch.Tensor, lengths: Sequence[int]) -> None:
        self.start = start
        self.storage = storage
        self.lengths = torch.tensor(lengths)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths
        self.build_seconds = 0.0

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    def batch(self, sample_index: torch.Tensor, length: int) -> torch.Tensor:
        """``[B, length, hidden]``: each sample's cached states, right-padded with zeros."""
        out = self.storage.new_zeros(len(sample_index), length, self.storage.shape[1])
        for row, index in enumerate(sample_index.tolist()):
            offset, count = int(self.offsets[index]), int(self.lengths[index])
            out[row, :count] = self.storage[offset : offset + count]
        return out


@torch.no_grad()
def build_prefix_cache(
    model: PreTrainedModel,
    examples: Sequence[Example],
    start: int,
    *,
    batch_size: int,
    pad_token_id: int,
    memory_budget: int,
    spill_dir: Path,
) -> PrefixCache:
    """Run the frozen prefix once over ``examples`` (in ``sample_index`` order) and store layer ``start``'s input."""
    began = time.perf_counter()
    lengths = [len(e.input_ids) for e in examples]
    hidden = model.get_input_embeddings().weight.shape[1]
    dtype = next(model.parameters()).dtype
    storage = _allocate(sum(lengths), hidden, dtype, memory_budget, spill_dir)
    cache = PrefixCache(start, storage, lengths)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with bypassed(model, range(start, num_layers(model))):
        for first in tqdm(range(0, len(examples), batch_size), desc="caching frozen prefix", unit="batch"):
            features = [{**vars(e), "sample_index": 0} for e in examples[first : first + batch_size]]
            batch = collate(features, pad_token_id)
            states = capture_layer_inputs(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
            for row, index in enumerate(range(first, first + len(features))):
                offset, count = int(cache.offsets[index]), lengths[index]
                storage[offset : offset + count] = states[start][row, :count].to(storage.device)
    model.train(was_training)
    cache.build_seconds = time.perf_counter() - began
    return cache


def _allocate(tokens: int, hidden: int, dtype: torch.dtype, memory_budget: int, spill_dir: Path) -> torch.Tensor:
    """In memory within ``memory_budget`` bytes, else a float32 memory-mapped file in ``spill_dir``."""
    if tokens * hidden * dtype.itemsize <= memory_budget:
        return torch.empty(tokens, hidden, dtype=dtype)
    spill_dir.mkdir(parents=True, exist_ok=True)
    path = spill_dir / PREFIX_CACHE_FILE
    logger.warning("prefix cache (%.2f GB) exceeds the memory budget; memory-mapping %s", tokens * hidden * 4e-9, path)
    return torch.from_numpy(np.memmap(path, dtype=np.float32, mode="w+", shape=(tokens, hidden)))
