"""Running part of a model without copying it: bypass layers, capture layer inputs, resume from a cache.

Every stage that asks "what if these layers were gone or different?" (removal metrics,
merge-candidate search, cached-prefix healing, the surgery tests) uses these helpers. They
swap modules inside the decoder-layer list for the duration of a ``with`` block and keep
the list's length, so the model's own forward (masks, per-layer attention types, rotary
embeddings, final norm, soft-capping, loss) runs unchanged. No model code is copied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn
from transformers import PreTrainedModel

from layerprune.models.architectures import decoder_layers


class Bypass(nn.Module):
    """Stands in for a removed layer: returns its input hidden state unchanged."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states


class Replay(nn.Module):
    """Ignores its input and returns a stored hidden state (the cached output of the layers below)."""

    def __init__(self, hidden_states: torch.Tensor) -> None:
        super().__init__()
        self.hidden_states = hidden_states

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.hidden_states


@contextlib.contextmanager
def substituted_layers(model: PreTrainedModel, substitutes: Mapping[int, nn.Module]) -> Iterator[None]:
    """Temporarily put ``substitutes[i]`` in place of decoder layer ``i``; restore on exit."""
    layers = decoder_layers(model)
    originals = {index: layers[index] for index in substitutes}
    try:
        for index, module in substitutes.items():
            layers[index] = module
        yield
    finally:
        for index, module in originals.items():
            layers[index] = module


def bypassed(model: PreTrainedModel, indices: Iterable[int]) -> contextlib.AbstractContextManager[None]:
    """Context in which the layers at ``indices`` pass their input through (as if removed)."""
    return substituted_layers(model, {index: Bypass() for index in indices})


def resumed_from(
    model: PreTrainedModel, start: int, hidden_states: torch.Tensor, extra: Mapping[int, nn.Module] | None = None
) -> contextlib.AbstractContextManager[None]:
    """Context in which a forward pass skips layers ``< start`` and resumes from ``hidden_states``.

    ``hidden_states`` must be layer ``start``'s input for the same batch (from
    :func:`capture_layer_inputs`). ``extra`` substitutes layers ``≥ start`` as well.
    """
    substitutes: dict[int, nn.Module] = {index: Bypass() for index in range(max(start - 1, 0))}
    if start > 0:
        substitutes[start - 1] = Replay(hidden_states)
    substitutes.update(extra or {})
    return substituted_layers(model, substitutes)


@torch.no_grad()
def capture_layer_inputs(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """Hidden states entering each decoder layer, plus the last layer's output: ``L + 1`` tensors.

    All are taken *before* the final norm (forward hooks on the layers), unlike
    ``output_hidden_states`` whose last entry has the final norm applied.
    """
    layers = decoder_layers(model)
    states: list[torch.Tensor] = []
    handles = [layer.register_forward_pre_hook(_append_input(states), with_kwargs=True) for layer in layers]
    handles.append(layers[-1].register_forward_hook(_append_output(states)))
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return states


def _append_input(states: list[torch.Tensor]):
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        states.append((args[0] if args else kwargs["hidden_states"]).detach())

    return hook


def _append_output(states: list[torch.Tensor]):
    def hook(module: nn.Module, args: tuple, output) -> None:
        states.append((output[0] if isinstance(output, tuple) else output).detach())

    return hook
