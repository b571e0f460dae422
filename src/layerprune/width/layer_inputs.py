"""Calling one decoder layer at a time on calibration batches, as the model's own forward would.

One forward pass of the model records, for every decoder layer and batch, the keyword
arguments the model passes it (attention mask of the layer's attention type, rotary
embeddings, position ids); these do not depend on the hidden states. Then layers can be
run one by one: layer ``i``'s inputs are layer ``i − 1``'s outputs *after* it was pruned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from layerprune.models.architectures import decoder_layers
from layerprune.width.obs import HessianAccumulator


@dataclass
class LayerInputs:
    """One layer's calibration inputs: a hidden-state tensor and keyword arguments per batch."""

    hidden: list[torch.Tensor]
    kwargs: list[dict]

    @torch.no_grad()
    def outputs(self, layer: nn.Module) -> Iterator[torch.Tensor]:
        for hidden, kwargs in zip(self.hidden, self.kwargs, strict=True):
            output = layer(hidden, **kwargs)
            yield output[0] if isinstance(output, tuple) else output


def input_hessians(
    layer: nn.Module, linears: dict[str, nn.Linear], inputs: LayerInputs, diagonal: bool = False
) -> dict[str, torch.Tensor]:
    """``H = 2XXᵀ/N`` of each of ``linears``' inputs while ``layer`` runs on ``inputs`` (diag only if asked)."""
    accumulators = {name: HessianAccumulator(lin.in_features, diagonal) for name, lin in linears.items()}
    handles = [
        lin.register_forward_pre_hook(lambda module, args, acc=accumulators[name]: acc.add(args[0].detach()))
        for name, lin in linears.items()
    ]
    try:
        for _ in inputs.outputs(layer):
            pass
    finally:
        for handle in handles:
            handle.remove()
    return {name: accumulator.hessian() for name, accumulator in accumulators.items()}


@dataclass
class LayerCalls:
    """Hidden states entering the current layer, and every layer's recorded keyword arguments."""

    hidden: list[torch.Tensor]
    kwargs: list[list[dict]]  # [layer][batch]

    def for_layer(self, index: int) -> LayerInputs:
        return LayerInputs(self.hidden, self.kwargs[index])

    def advance(self, index: int, layer: nn.Module) -> None:
        """Replace the hidden states by ``layer``'s outputs: the inputs of layer ``index + 1``."""
        self.hidden = list(self.for_layer(index).outputs(layer))


@torch.no_grad()
def capture_layer_calls(model: PreTrainedModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> LayerCalls:
    """Run the model once per batch, recording layer 0's hidden input and every layer's kwargs."""
    layers = decoder_layers(model)
    hidden: list[torch.Tensor] = []
    kwargs: list[list[dict]] = [[] for _ in layers]
    handles = [
        layer.register_forward_pre_hook(_recorder(i, hidden, kwargs), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]
    handles.append(layers[-1].register_forward_pre_hook(_stop))  # the last outputs and the LM head are not needed
    device = next(model.parameters()).device
    try:
        for input_ids, attention_mask in batches:
            with contextlib.suppress(_Stop):
                model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return LayerCalls(hidden, kwargs)


class _Stop(Exception):
    """Raised once the last layer's inputs are recorded, to skip the rest of the forward pass."""


def _stop(module: nn.Module, args: tuple) -> None:
    raise _Stop


def _recorder(index: int, hidden: list[torch.Tensor], kwargs: list[list[dict]]):
    def hook(module: nn.Module, args: tuple, call_kwargs: dict) -> None:
        call_kwargs = dict(call_kwargs)
        state = args[0] if args else call_kwargs.pop("hidden_states")
        if index == 0:
            hidden.append(state.detach())
        kwargs[index].append(call_kwargs)

    return hook
