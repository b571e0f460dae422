"""Healing: fine-tune a pruned model (which parameters × which loss), iterate prune→heal schedules."""

from layerprune.healing.data import DATA_FORMATS, DataConfig, HealingData, load_healing_data
from layerprune.healing.heal import HealConfig, HealResult, heal
from layerprune.healing.losses import LOSSES, LossConfig
from layerprune.healing.methods import METHODS, MethodConfig, untie_lm_head
from layerprune.healing.trainer import HealingTrainer, TrainConfig

__all__ = [
    "DATA_FORMATS",
    "LOSSES",
    "METHODS",
    "DataConfig",
    "HealConfig",
    "HealResult",
    "HealingData",
    "HealingTrainer",
    "LossConfig",
    "MethodConfig",
    "TrainConfig",
    "heal",
    "load_healing_data",
    "untie_lm_head",
]
