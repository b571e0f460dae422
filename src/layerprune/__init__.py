"""layerprune: make large language models shallower.

Load → score → remove or merge layers → heal → evaluate → save a standard Hugging Face model.
"""

from layerprune.api import keep_layers, load_model, remove_layers, save_model

__version__ = "0.1.0"
__all__ = ["__version__", "keep_layers", "load_model", "remove_layers", "save_model"]
