"""Loading models and the per-family architecture table."""

from layerprune.models.architectures import (
    Architecture,
    decoder_config,
    decoder_layers,
    final_norm,
    get_architecture,
    get_submodule,
    num_layers,
    per_layer_attention_types,
    register_architecture,
    supported_families,
)
from layerprune.models.loading import load_model, model_source

__all__ = [
    "Architecture",
    "decoder_config",
    "decoder_layers",
    "final_norm",
    "get_architecture",
    "get_submodule",
    "load_model",
    "model_source",
    "num_layers",
    "per_layer_attention_types",
    "register_architecture",
    "supported_families",
]
