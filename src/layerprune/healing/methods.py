"""Which parameters train (``METHODS``): lora, qlora, partial (head + last K layers) and full.

A method prepares the model for training (freezing, wrapping) and finishes it afterwards
(LoRA merges its adapter into the weights, so the result is a plain Hugging Face model).
The loss is chosen separately (:mod:`layerprune.healing.losses`); any method works with any loss.

Tied embeddings (SmolLM2, Gemma, small Qwen): lm_head *is* the input embedding matrix. Without
``untie``, ``partial`` trains that shared matrix, so the input embeddings seen by the frozen
layers change too (and cached-prefix training is impossible). ``untie`` gives lm_head its own
copy and sets ``tie_word_embeddings = False`` in the config, so the saved model reloads with
two matrices; it costs ``vocab × hidden`` extra parameters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import torch
from accelerate import PartialState
from pydantic import Field
from torch import nn
from transformers import PreTrainedModel

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.models.architectures import decoder_config, decoder_layers, final_norm, get_architecture, get_submodule
from layerprune.registry import Registry

logger = logging.getLogger(__name__)


@strict_config
class MethodConfig:
    """Defaults follow the paper: LoRA r=8, α=16, dropout 0.05 on all attention and MLP projections; K=3.

    ``lora_head``: LoRA also trains the LM head in full (peft's ``modules_to_save``), as ``partial``
    does; a tied head needs ``untie`` (else the input embeddings would change with it).
    """

    name: str = "partial"
    train_layers: Annotated[int, Field(ge=0)] = 3
    untie: bool = False
    lora_r: Annotated[int, Field(ge=1)] = 8
    lora_alpha: Annotated[int, Field(ge=1)] = 16
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
    lora_head: bool = False


class HealingMethod:
    """Base: ``prepare`` makes the trainable model, ``finish`` turns it back into a plain model."""

    def prepare(self, model: PreTrainedModel, config: MethodConfig) -> nn.Module:
        raise NotImplementedError

    def finish(self, model: nn.Module, work_dir: Path) -> PreTrainedModel:
        return model


METHODS: Registry[type[HealingMethod]] = Registry("healing method")


@METHODS.register("full")
class Full(HealingMethod):
    """Every parameter trains."""

    def prepare(self, model: PreTrainedModel, config: MethodConfig) -> nn.Module:
        maybe_untie(model, config)
        return model.requires_grad_(True)


@METHODS.register("partial")
class Partial(HealingMethod):
    """lm_head, the final norm and the last K decoder layers train; everything else is frozen.

    Lu et al. (2024, "Reassessing Layer Pruning in LLMs") find that K = 3 after removing a
    quarter of the layers beats LoRA and QLoRA at lower cost. Their released code cannot do
    this for tied embeddings (Gemma was left out); see ``untie``.
    """

    def prepare(self, model: PreTrainedModel, config: MethodConfig) -> nn.Module:
        layers = decoder_layers(model)
        if not 0 <= config.train_layers <= len(layers):
            raise UserError(f"--train-layers must be within 0..{len(layers)}, got {config.train_layers}")
        maybe_untie(model, config)
        if is_tied(model):
            logger.warning("lm_head is tied to the input embeddings: partial tuning trains both (see --untie)")
        model.requires_grad_(False)
        trained = [get_submodule(model, get_architecture(model).lm_head), final_norm(model)]
        trained += list(layers)[len(layers) - config.train_layers :]
        for module in filter(None, trained):  # a family without a final norm (inferred entry) has None
            module.requires_grad_(True)
        return model


@METHODS.register("lora")
class Lora(HealingMethod):
    """LoRA adapters (Hu et al., 2021) on the family's attention and MLP projections; merged after training.

    The adapter is also saved to ``<work_dir>/adapter`` before the merge.
    """

    def prepare(self, model: PreTrainedModel, config: MethodConfig) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        maybe_untie(model, config)
        arch = get_architecture(model)
        if config.lora_head and is_tied(model):
            raise UserError("lora_head trains the LM head, which is tied to the input embeddings: add untie")
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(arch.lora_targets),
            modules_to_save=[arch.lm_head] if config.lora_head else None,
            task_type="CAUSAL_LM",
        )
        try:
            return get_peft_model(model, lora)
        except ValueError as error:  # peft adapts fused MoE expert weights as parameters, without dropout
            if "lora_dropout" not in str(error):
                raise
            raise UserError(
                f"peft adapts the fused expert weights of model_type {model.config.model_type!r} as parameters, "
                f"which take no dropout; set lora_dropout 0 (got {config.lora_dropout})"
            ) from error

    def finish(self, model: nn.Module, work_dir: Path) -> PreTrainedModel:
        save_adapter(model, work_dir)
        return model.merge_and_unload()


@METHODS.register("qlora")
class QLora(Lora):
    """LoRA on a 4-bit NF4 copy of the model (Dettmers et al., 2023; bitsandbytes, CUDA only).

    The frozen base is reloaded in NF4 with double quantisation and bfloat16 compute; after
    training the adapter is merged into the original full-precision weights (not into the
    quantised ones), so the result is a plain model of the input's dtype.
    """

    def prepare(self, model: PreTrainedModel, config: MethodConfig) -> nn.Module:
        require_bitsandbytes()
        maybe_untie(model, config)  # on the original, so the merged result carries the untied head
        self.original = model
        return super().prepare(quantized_copy(model), config)

    def finish(self, model: nn.Module, work_dir: Path) -> PreTrainedModel:
        from peft import PeftModel

        save_adapter(model, work_dir)
        PartialState().wait_for_everyone()
        return PeftModel.from_pretrained(self.original, work_dir / "adapter").merge_and_unload()


def save_adapter(model: nn.Module, work_dir: Path) -> None:
    """The trained adapter in ``work_dir/adapter`` (written by the main process only)."""
    if PartialState().is_main_process:
        model.save_pretrained(work_dir / "adapter")


def require_bitsandbytes() -> None:
    if not torch.cuda.is_available():
        raise UserError("qlora needs a CUDA GPU (bitsandbytes 4-bit); on CPU use lora or partial")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("qlora needs bitsandbytes: pip install 'layerprune[qlora]'") from None


def quantized_copy(model: PreTrainedModel) -> PreTrainedModel:
    """Reload ``model`` from a temporary save with NF4 4-bit weights, ready for k-bit training."""
    import tempfile

    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        quantized = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=quantization, device_map="auto")
    return prepare_model_for_kbit_training(quantized)


def is_tied(model: PreTrainedModel) -> bool:
    arch = get_architecture(model)
    return get_submodule(model, arch.lm_head).weight is get_submodule(model, arch.embeddings).weight


def maybe_untie(model: PreTrainedModel, config: MethodConfig) -> None:
    if config.untie:
        untie_lm_head(model)


def untie_lm_head(model: PreTrainedModel) -> bool:
    """Give lm_head its own copy of the embedding matrix and record ``tie_word_embeddings = False``.

    Returns False (and changes nothing) when the model is already untied.
    """
    if not is_tied(model):
        return False
    arch = get_architecture(model)
    head, embeddings = get_submodule(model, arch.lm_head), get_submodule(model, arch.embeddings)
    head.weight = nn.Parameter(embeddings.weight.detach().clone())
    for config in {id(c): c for c in (model.config, decoder_config(model))}.values():
        config.tie_word_embeddings = False
    return True


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of parameters that require grad (shared tensors listed once)."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def frozen_prefix_length(model: nn.Module) -> int:
    """How many leading decoder layers are frozen *and* fed by frozen embeddings (0 if the embeddings train).

    Their outputs never change during training, so they can be computed once (cached prefix).
    """
    arch = get_architecture(model)
    if any(p.requires_grad for p in get_submodule(model, arch.embeddings).parameters()):
        return 0
    count = 0
    for layer in decoder_layers(model):
        if any(p.requires_grad for p in layer.parameters()):
            break
        count += 1
    return count
