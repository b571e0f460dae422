"""The chunked LM head + NLL (layerprune.models.head) equals the plain loss and never holds [tokens, vocab] logits."""

from __future__ import annotations

import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from layerprune.healing.losses import LOSSES, LossConfig, LossInputs
from layerprune.metrics.nll import token_nll
from layerprune.models import head
from tiny_models import FAMILIES, tiny_model

QWEN_VOCAB = 32768
ROWS = 8  # positions per chunk in these tests


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(head, "CHUNK_LOGITS", ROWS * QWEN_VOCAB)


@pytest.fixture(scope="module")
def qwen() -> torch.nn.Module:
    """A Qwen2-layout model with tied embeddings and a 32k vocabulary."""
    model = tiny_model("qwen2", vocab_size=QWEN_VOCAB, tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    return model


def _batch(vocab: int, length: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(3, vocab, (2, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, -9:] = 0  # padding: those targets are not predicted
    return ids, mask


def _plain_mean_nll(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The loss as everyone writes it: full logits, cross_entropy over the predicted positions."""
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    valid = (mask[:, 1:] * mask[:, :-1]).bool()
    return F.cross_entropy(logits[valid], ids[:, 1:][valid])


def test_chunked_nll_equals_the_plain_loss_on_a_tied_32k_qwen2(qwen, small_chunks) -> None:
    ids, mask = _batch(QWEN_VOCAB)
    with torch.no_grad():
        total, count = token_nll(qwen, ids, mask)
        plain = _plain_mean_nll(qwen, ids, mask)
    assert count == 2 * 63 - 9
    assert count > 10 * ROWS  # many chunks
    assert abs(float(total) / count - float(plain)) < 1e-6


def test_chunked_nll_gradients_equal_the_plain_ones(qwen, small_chunks) -> None:
    """Taylor's path: ∂NLL/∂W through the checkpointed chunks, tied head and embeddings included."""
    ids, mask = _batch(QWEN_VOCAB, length=24)
    parameters = [qwen.model.embed_tokens.weight, qwen.model.layers[-1].mlp.down_proj.weight]
    total, count = token_nll(qwen, ids, mask)
    chunked = torch.autograd.grad(total / count, parameters)
    plain = torch.autograd.grad(_plain_mean_nll(qwen, ids, mask), parameters)
    for got, want in zip(chunked, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4 * float(want.abs().max()))
        assert want.abs().max() > 0


def test_healing_ce_from_the_head_input_equals_ce_from_logits(qwen, small_chunks) -> None:
    ids, _ = _batch(QWEN_VOCAB, length=24)
    labels = ids.clone()
    labels[:, :10] = -100  # prompt tokens are not trained
    ce = LOSSES.get("ce")
    with torch.no_grad(), head.head_skipped(qwen) as captured:
        skipped = qwen(input_ids=ids)
        assert skipped.logits.shape[1] == 0
    student = {"logits": None, "head_input": captured[-1]}
    chunked = ce(LossInputs(student, labels, model=qwen), LossConfig())
    with torch.no_grad():
        plain = F.cross_entropy(qwen(input_ids=ids).logits[:, :-1].reshape(-1, QWEN_VOCAB), labels[:, 1:].reshape(-1))
    assert abs(chunked.item() - plain.item()) < 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_chunked_nll_equals_the_plain_loss_in_every_family(family: str, monkeypatch) -> None:
    """Each family's logit post-processing (Gemma soft-capping, Cohere and Granite scales) is applied."""
    model = tiny_model(family)
    monkeypatch.setattr(head, "CHUNK_LOGITS", 5 * model.get_output_embeddings().out_features)
    ids, mask = _batch(model.get_output_embeddings().out_features, length=16)
    with torch.no_grad():
        total, count = token_nll(model, ids, mask)
        plain = _plain_mean_nll(model, ids, mask)
    assert head.chunked_head_supported(model)
    assert abs(float(total) / count - float(plain)) < 1e-6


class AllocationTracker(TorchDispatchMode):
    """Bytes of the storages that ops create (not views of their inputs): the largest, and the peak alive at once."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = self.largest = 0
        self.storages: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        inputs = {_pointer(t) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(output):
            if isinstance(tensor, torch.Tensor) and _pointer(tensor) not in inputs:
                self._track(tensor)
        return output

    def _track(self, tensor: torch.Tensor) -> None:
        pointer, size = _pointer(tensor), tensor.untyped_storage().nbytes()
        if pointer in self.storages or size == 0:
            return
        self.storages.add(pointer)
        self.live += size
        self.peak, self.largest = max(self.peak, self.live), max(self.largest, size)
        weakref.finalize(tensor, self._free, pointer, size)

    def _free(self, pointer: int, size: int) -> None:
        self.storages.discard(pointer)
        self.live -= size


def _pointer(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


def _tracked(function) -> AllocationTracker:
    tracker = AllocationTracker()
    with tracker:
        function()
    return tracker


def test_chunked_nll_peak_memory_stays_below_the_logits_size(small_chunks) -> None:
    """Forward and backward (Taylor's: gradients for the layers, not the tied head): the plain loss holds the
    [tokens, vocab] logits; the chunked one holds at most a chunk of them and stays below half their size."""
    model = tiny_model("qwen2", vocab_size=QWEN_VOCAB, tie_word_embeddings=True)
    model.model.embed_tokens.weight.requires_grad_(False)
    ids, mask = _batch(QWEN_VOCAB)
    logits_bytes = ids.numel() * QWEN_VOCAB * 4

    def chunked() -> None:
        total, count = token_nll(model, ids, mask)
        (total / count).backward()

    plain = _tracked(lambda: _plain_mean_nll(model, ids, mask).backward())
    assert plain.largest >= logits_bytes  # the instrument sees the logits
    assert plain.peak >= logits_bytes
    model.zero_grad(set_to_none=True)
    tracker = _tracked(chunked)
    assert tracker.largest <= ROWS * QWEN_VOCAB * 4
    assert tracker.peak < logits_bytes / 2
