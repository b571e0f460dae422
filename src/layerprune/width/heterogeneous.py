"""Saving and loading models whose layers have different widths (non-uniform width pruning).

None of the families layerprune width-prunes (Llama, Mistral, Qwen 2/3, Gemma 1–3, Phi-3,
OLMo 2, Granite) reads transformers' ``per_layer_config`` in its modeling code (only newer
families such as Gemma 4 do), so a heterogeneous config alone would load with every layer
at the global width and fail on the weight shapes. Such a model is saved with

* ``layerprune_layer_widths`` in the decoder config: one ``{num_attention_heads,
  num_key_value_heads, intermediate_size}`` per layer (``head_dim`` pinned globally), and
* ``modeling_layerprune_width.py`` in the output directory, registered with ``auto_map``:
  a subclass of the family's own ``*ForCausalLM`` class whose ``__init__`` rebuilds each
  decoder layer (the family's own layer class) from its per-layer config. No model code is
  copied; plain transformers loads it with ``trust_remote_code=True``.

layerprune loads such a directory without remote code: :func:`load_narrow` builds the same
subclass from this module (the file's function is this module's :func:`narrow_layers`).
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

from transformers import PreTrainedModel

from layerprune.models.architectures import decoder_config, get_architecture

WIDTHS_KEY = "layerprune_layer_widths"
MODULE_NAME = "modeling_layerprune_width"


def narrow_layers(model, layers_path: str, config_path: str) -> None:
    """Rebuild each decoder layer from the config's per-layer widths (runs inside the saved module too)."""
    root = model.config
    config = getattr(root, config_path) if config_path else root
    layers = model.get_submodule(layers_path)
    for index, width in enumerate(getattr(config, "layerprune_layer_widths", None) or []):
        layer_config = copy.copy(config)
        for key, value in width.items():
            setattr(layer_config, key, value)
        layers[index] = type(layers[index])(layer_config, index)


_TEMPLATE = '''"""Written by layerprune: {base} whose decoder layers have per-layer widths.

Each layer is the family's own decoder layer built from a copy of the config with that
layer's entry of `layerprune_layer_widths`. Load with trust_remote_code=True.
"""

import copy

from {module} import {base} as _Base


{function}

class {name}(_Base):
    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        narrow_layers(self, {layers!r}, {config_path!r})
'''


def is_narrow(model: PreTrainedModel) -> bool:
    return bool(getattr(decoder_config(model), WIDTHS_KEY, None))


def class_name(base: type) -> str:
    return f"LayerpruneWidth{base.__name__}"


def write_modeling(model: PreTrainedModel, directory: Path) -> None:
    """Write the modeling module into ``directory`` and register it in its ``config.json`` ``auto_map``."""
    base = type(model)
    arch = get_architecture(model)
    text = _TEMPLATE.format(
        base=base.__name__,
        module=base.__module__,
        function=inspect.getsource(narrow_layers),
        name=class_name(base),
        layers=arch.layers,
        config_path=arch.config_path,
    )
    (directory / f"{MODULE_NAME}.py").write_text(text)
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = {"AutoModelForCausalLM": f"{MODULE_NAME}.{class_name(base)}"}
    config_file.write_text(json.dumps(config, indent=2) + "\n")


def narrow_class(base: type[PreTrainedModel], layers_path: str, config_path: str) -> type[PreTrainedModel]:
    """The same subclass the saved module defines, built in-process (no remote code runs)."""

    def __init__(self, config, *args, **kwargs):
        base.__init__(self, config, *args, **kwargs)
        narrow_layers(self, layers_path, config_path)

    return type(class_name(base), (base,), {"__init__": __init__, "__module__": __name__})


def stored_widths(config) -> list[dict] | None:
    """The per-layer widths recorded in a loaded config (decoder sub-config for composite models)."""
    for candidate in (config, getattr(config, "text_config", None)):
        widths = getattr(candidate, WIDTHS_KEY, None) if candidate is not None else None
        if widths:
            return widths
    return None


def load_narrow(path: str | Path, **kwargs) -> PreTrainedModel | None:
    """Load a directory saved with per-layer widths without remote code; None if it has none."""
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    if WIDTHS_KEY not in raw and WIDTHS_KEY not in raw.get("text_config", {}):
        return None  # checked on the raw file: other repositories' remote code must never be resolved here
    config = AutoConfig.from_pretrained(path)
    if not stored_widths(config):
        return None
    base = AutoModelForCausalLM._model_mapping[type(config)]
    arch = get_architecture(config)
    return narrow_class(base, arch.layers, arch.config_path).from_pretrained(path, config=config, **kwargs)
