"""Running part of a model without copying it: bypass layers, capture layer inputs, resume from a cache.

Every stage that asks "what if these layers were gone or different?" (removal metrics,
merge-candidate search, cached-prefix healing, the surgery tests) uses these helpers. They
swap modules inside the decoder-layer list for the duration of a ``with`` block and keep
the list's length, so the model's own forward (masks, per-layer attention types, rotary
embeddings, final norm, soft-capping, loss) runs unchanged. No model code is copied.

A stand-in answers attribute reads as the layer it replaces does (``attention_type``,
``is_sliding``, ``layer_idx``, …), since hybrid models choose a layer's mask or cache by
them, and returns ``(hidden_states, None)`` where the family's layers return tuples
(bloom, falcon, gpt-neo read ``outputs[0]``). A bypassed Mamba or linear-attention layer
leaves its cache state untouched, as a removed layer would.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping

import torch
from torch import nn
from transformers import PreTrainedModel

from layerprune.models.architectures import decoder_layers, get_architecture


class StandIn(nn.Module):
    """Base of the modules that temporarily take a layer's place: same plain attributes, same output kind."""

    as_tuple = False

    def adopt(self, original: nn.Module, as_tuple: bool) -> None:
        """Answer attribute reads as ``original`` does, return the family's output kind (by :func:`substituted_layers`).

        ``original`` is kept outside the module tree, so it is neither called nor counted as a parameter.
        """
        self.__dict__["_original"] = original
        self.as_tuple = as_tuple

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            original = self.__dict__.get("_original")
            if original is None:
                raise
            return getattr(original, name)

    def output(self, hidden_states: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, None]:
        return (hidden_states, None) if self.as_tuple else hidden_states


class Bypass(StandIn):
    """Stands in for a removed layer: returns its input hidden state unchanged."""

    def forward(self, *args, **kwargs):
        return self.output(args[0] if args else kwargs["hidden_states"])


class Replay(StandIn):
    """Ignores its input and returns a stored hidden state (the cached output of the layers below)."""

    def __init__(self, hidden_states: torch.Tensor) -> None:
        super().__init__()
        self.hidden_states = hidden_states

    def forward(self, *args, **kwargs):
        return self.output(self.hidden_states)


@contextlib.contextmanager
def substituted_layers(model: PreTrainedModel, substitutes: Mapping[int, nn.Module]) -> Iterator[None]:
    """Temporarily put ``substitutes[i]`` in place of decoder layer ``i``; restore on exit."""
    layers, as_tuple = decoder_layers(model), get_architecture(model).layer_returns_tuple
    originals = {index: layers[index] for index in substitutes}
    try:
        for index, module in substitutes.items():
            if isinstance(module, StandIn):
                module.adopt(originals[index], as_tuple)
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


class _Stop(Exception):
    """Raised by a forward hook to end a forward pass once a layer's output is known."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output


@torch.no_grad()
def run_layer(
    model: PreTrainedModel,
    index: int,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    hidden_states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input, output) of decoder layer ``index`` alone, called by the model's own forward.

    ``hidden_states`` is the layer's input (``None`` for layer 0: the embedding output);
    the layers below stand in (:func:`resumed_from`) and the pass stops at the layer's
    output, so the layers above and the head never run (they may be on the meta device).
    ``input_ids`` may repeat a batch ``k`` times along dimension 0 for ``k`` stacked states.
    """
    layer = decoder_layers(model)[index]
    states: list[torch.Tensor] = []
    pre = layer.register_forward_pre_hook(_append_input(states), with_kwargs=True)
    post = layer.register_forward_hook(_stop_with_output)
    context = contextlib.nullcontext() if hidden_states is None else resumed_from(model, index, hidden_states)
    try:
        with context:
            model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    except _Stop as stop:
        return states[0], stop.output
    finally:
        pre.remove()
        post.remove()
    raise RuntimeError(f"the forward pass of {type(model).__name__} never reached decoder layer {index}")


def _stop_with_output(module: nn.Module, args: tuple, output) -> None:
    raise _Stop((output[0] if isinstance(output, tuple) else output).detach())
