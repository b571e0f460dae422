"""Inferring the architecture entry of a family the table does not list, from the model itself.

transformers registers about 190 causal-LM families; the table in
:mod:`layerprune.models.architectures` confirms a few dozen. For any other family the
entry is read off the built model (on the meta device when only a config is given):

* the layer count is the text config's ``num_hidden_layers`` (or the key it maps to);
* the decoder-layer list is the ``nn.ModuleList`` of that length under ``get_decoder()``;
* the embeddings and LM head are ``get_input_embeddings()`` / ``get_output_embeddings()``,
  found by identity; the final norm is the decoder's one direct child whose class is a norm;
* the LoRA targets are the ``nn.Linear`` names inside the layers, routers excluded;
* ``layer_returns_tuple`` says whether a layer returns ``(hidden_states, ...)`` (a one-token probe).

The inferred entry is logged once per family and shown by ``layerprune info``.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from layerprune.errors import UserError
from layerprune.models.layer_config import LAYER_COUNT_KEYS

logger = logging.getLogger(__name__)

_ROUTER_NAMES = ("router", "gate", "gate_proj_router", "shared_expert_gate", "wg")


def text_config_path(config: PretrainedConfig) -> str:
    """The attribute of ``config`` that holds the decoder's settings; empty when ``config`` is the text config."""
    text = config.get_text_config(decoder=True)
    if text is config:
        return ""
    return next((key for key, value in vars(config).items() if value is text), "")


def layer_count_key(config: PretrainedConfig, model: PreTrainedModel | None = None) -> str:
    """The real (unmapped) config attribute that holds the number of decoder layers.

    Empty where the count is a property derived from the per-layer lists, which slicing sets.
    """
    mapped = getattr(type(config), "attribute_map", {})
    keys = [mapped.get(key, key) for key in LAYER_COUNT_KEYS if isinstance(vars(config).get(mapped.get(key, key)), int)]
    lengths = {len(m) for m in (model.modules() if model else ()) if isinstance(m, nn.ModuleList)}
    matching = [key for key in keys if vars(config)[key] in lengths]
    if matching or keys:
        return (matching or keys)[0]
    if isinstance(getattr(config, "num_hidden_layers", None), int):
        return ""  # derived from the per-layer lists (Nemotron-H's layers_block_type)
    raise UserError(f"cannot find the layer count of model_type {config.model_type!r} (none of {LAYER_COUNT_KEYS})")


def meta_model(config: PretrainedConfig, model_class: type[PreTrainedModel] | None = None) -> PreTrainedModel:
    """The model of ``config`` on the meta device (no memory), to read its structure.

    ``model_class`` defaults to what ``AutoModelForCausalLM`` maps the config to.
    """
    with torch.device("meta"):
        if model_class is not None:
            return model_class._from_config(config)
        return AutoModelForCausalLM.from_config(config)


def module_path(root: nn.Module, target: nn.Module | None) -> str:
    """The dotted path of ``target`` inside ``root`` (empty if absent)."""
    if target is None:
        return ""
    return next((name for name, module in root.named_modules() if module is target), "")


def find_layer_list(model: PreTrainedModel, count: int) -> str:
    """The path of the ``nn.ModuleList`` of ``count`` layers of one class, preferring one inside ``get_decoder()``."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    prefix = module_path(model, decoder)
    candidates = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == count and count > 0
    ]
    inside = [name for name in candidates if not prefix or name.startswith(prefix + ".")]
    found = inside or candidates
    family = model.config.model_type
    if not found:
        raise UserError(
            f"cannot find the decoder-layer list of model_type {family!r}: no nn.ModuleList has {count} entries"
        )
    whole = [name for name in found if _layer_like(model.get_submodule(name)[0])]
    if not whole:
        raise UserError(
            f"model_type {family!r} splits its layers over parallel lists ({', '.join(found)}) instead of one list "
            "of whole layers; layerprune removes whole layers only"
        )
    return min(whole, key=len)


def _layer_like(module: nn.Module) -> bool:
    name = type(module).__name__.lower()
    return name.endswith(("layer", "block")) or (
        any(word in name for word in ("layer", "block")) and "norm" not in name
    )


def find_final_norm(model: PreTrainedModel, layers_path: str) -> str:
    """The decoder's first norm child registered after the layer list, else its only norm child (or empty)."""
    parent_path, _, layers_name = layers_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    names = [name for name, _ in parent.named_children()]
    norms = [name for name, child in parent.named_children() if "norm" in type(child).__name__.lower()]
    after = [name for name in norms if names.index(name) > names.index(layers_name)]
    chosen = after[:1] or (norms if len(norms) == 1 else [])
    if not chosen:
        return ""
    return f"{parent_path}.{chosen[0]}" if parent_path else chosen[0]


def linear_names(layers: nn.ModuleList) -> tuple[str, ...]:
    """The distinct last names of the ``nn.Linear`` modules inside the layers, routers excluded (LoRA targets)."""
    names = {
        name.rsplit(".", 1)[-1]
        for layer in layers
        for name, module in layer.named_modules()
        if isinstance(module, nn.Linear) and name
    }
    return tuple(sorted(name for name in names if name not in _ROUTER_NAMES))


def infer_fields(model: PreTrainedModel) -> dict[str, object]:
    """The :class:`~layerprune.models.architectures.Architecture` fields read off ``model``."""
    config_path = text_config_path(model.config)
    text = getattr(model.config, config_path) if config_path else model.config
    count_key = layer_count_key(text, model)
    layers_path = find_layer_list(model, text.num_hidden_layers if not count_key else getattr(text, count_key))
    layers = model.get_submodule(layers_path)
    return dict(
        family=model.config.model_type,
        layers=layers_path,
        final_norm=find_final_norm(model, layers_path),
        embeddings=module_path(model, model.get_input_embeddings()),
        lm_head=module_path(model, model.get_output_embeddings()) or "lm_head",
        layer_count_key=count_key,
        lora_targets=linear_names(layers),
        config_path=config_path,
        layer_returns_tuple=returns_tuple(model, layers),
        inferred=True,
    )


def returns_tuple(model: PreTrainedModel, layers: nn.ModuleList) -> bool:
    """Whether a layer returns ``(hidden_states, ...)`` (bloom, falcon, gpt-neo), seen on a one-token forward.

    A model on the meta device cannot run; its entry says ``False`` (only config slicing needs it then).
    """
    if any(p.is_meta for p in layers[0].parameters()):
        return False
    seen: list[bool] = []
    handle = layers[0].register_forward_hook(lambda module, args, output: seen.append(isinstance(output, tuple | list)))
    try:
        with torch.no_grad():
            model(input_ids=torch.ones(1, 1, dtype=torch.long, device=model.device))
    except Exception:
        logger.debug("one-token probe of %s failed", model.config.model_type, exc_info=True)
    finally:
        handle.remove()
    return bool(seen and seen[0])
