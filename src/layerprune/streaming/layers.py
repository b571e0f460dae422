"""A model whose decoder layers stay on disk until they run: one layer at a time, loaded from the shards.

The model is built from its config with ``accelerate.init_empty_weights``: parameters on
the meta device (no memory), buffers (rotary frequencies, embedding scales) computed for
real by the model's own ``__init__``. The parts outside the decoder layers (embeddings,
final norm, LM head) are loaded once; :meth:`StreamedModel.layer` loads one layer's tensors
onto the device, yields the model's own layer module, and puts it back on the meta device.
Checkpoint names are found through transformers' ``revert_weight_conversion`` (the mapping
``save_pretrained`` applies), so renamed families (Gemma 3, GPT-NeoX) work; families whose
checkpoint splits a module's tensor (MoE experts fused on load) are refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator

import torch
from accelerate import init_empty_weights
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.core_model_loading import revert_weight_conversion

from layerprune.errors import UserError
from layerprune.models.architectures import decoder_layers
from layerprune.streaming.checkpoint import Checkpoint

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 2**17  # glibc's own initial threshold, kept fixed


class StreamedModel:
    """The model of ``checkpoint`` with its decoder layers on the meta device until :meth:`layer` loads one."""

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device = "cpu") -> None:
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        unmap_large_blocks_on_free()
        self.model = skeleton(checkpoint)
        _move_buffers(self.model, self.device)
        self.names = checkpoint_names(self.model, checkpoint)
        self.places = parameter_places(self.model)
        self.loads = 0
        layer_tensors = {name for layer in decoder_layers(self.model) for name in _own_names(self.model, layer)}
        self._load({name for name in self.names if name not in layer_tensors})

    @property
    def num_layers(self) -> int:
        return len(decoder_layers(self.model))

    @contextlib.contextmanager
    def layer(self, index: int) -> Iterator[nn.Module]:
        """Layer ``index`` with its weights on the device for the duration of the block."""
        module = decoder_layers(self.model)[index]
        names = _own_names(self.model, module)
        self._load(names)
        self.loads += 1
        try:
            yield module
        finally:
            for name in names:
                self._set(name, torch.empty_like(self.model.get_parameter(name), device="meta"))

    def _load(self, names: set[str]) -> None:
        for name in sorted(names):
            self._set(name, self.checkpoint.tensor(self.names[name]).to(self.device))

    def _set(self, name: str, value: torch.Tensor) -> None:
        """Put ``value`` in place of parameter ``name`` everywhere it is used (tied weights stay tied)."""
        expected = self.model.get_parameter(name).shape
        if value.shape != expected:
            raise UserError(f"checkpoint tensor for {name} has shape {list(value.shape)}, expected {list(expected)}")
        parameter = nn.Parameter(value, requires_grad=False)
        for module, attribute in self.places[name]:
            setattr(module, attribute, parameter)


def unmap_large_blocks_on_free() -> None:
    """Make glibc serve every allocation of ``MMAP_THRESHOLD`` bytes or more from its own map, unmapped on free.

    By default glibc raises its mmap threshold (up to 32 MiB) whenever a mapped block is
    freed, so after the first layer is freed later layers' tensors and activations come
    from the heap, whose freed blocks between live ones (states) stay resident: peak RSS
    grew by about a layer per layer (1.01 × the weights on the 3 GB bench model, 0.55 × with
    a fixed threshold; BENCHMARKS.md). Setting the threshold turns that adjustment off for
    the process. No-op where the C library is not glibc.
    """
    if platform.libc_ver()[0] == "glibc":
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def skeleton(checkpoint: Checkpoint) -> PreTrainedModel:
    """The model of ``checkpoint.config`` with meta parameters and real buffers, in eval mode."""
    config = checkpoint.config
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(config, "dtype", None))
    model.tie_weights()  # init_empty_weights re-registers parameters, which unties shared ones
    return model.eval().requires_grad_(False)


def _move_buffers(model: nn.Module, device: torch.device) -> None:
    """Buffers (rotary frequencies, embedding scales) onto ``device``; the meta parameters stay where they are."""
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = buffer.to(device)


def checkpoint_names(model: PreTrainedModel, checkpoint: Checkpoint) -> dict[str, str]:
    """Model parameter name → checkpoint tensor name, for every parameter the checkpoint stores.

    Tied parameters appear once (under their first name). A parameter that the checkpoint
    stores split over several tensors, or not at all, is a :class:`UserError`.
    """
    names = {}
    for name, parameter in model.named_parameters():
        stored = list(revert_weight_conversion(model, {name: parameter}))
        if len(stored) != 1 or stored[0] not in checkpoint.weight_map:
            raise UserError(
                f"cannot locate parameter {name} of {checkpoint.config.model_type} in the checkpoint "
                f"(stored as {stored}); streamed scoring and merging need one checkpoint tensor per parameter"
            )
        names[name] = stored[0]
    return names


def _own_names(model: PreTrainedModel, module: nn.Module) -> set[str]:
    """Full parameter names of ``module`` inside ``model``."""
    prefix = next(name for name, candidate in model.named_modules() if candidate is module)
    return {f"{prefix}.{name}" for name, _ in module.named_parameters()}


def parameter_places(model: nn.Module) -> dict[str, list[tuple[nn.Module, str]]]:
    """For each parameter (first name of tied ones), every (module, attribute) that holds it."""
    first: dict[int, str] = {}
    places: dict[str, list[tuple[nn.Module, str]]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        owner, _, attribute = name.rpartition(".")
        key = first.setdefault(id(parameter), name)
        places.setdefault(key, []).append((model.get_submodule(owner), attribute))
    return places
