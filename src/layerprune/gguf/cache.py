"""The fp32 cache of a GGUF, written tensor by tensor into safetensors shards.

``from_pretrained(gguf_file=...)`` dequantizes the whole file into memory before anything is
saved (1.5x the fp32 size at peak on a 1.5B Q4_K_M). Here each GGUF tensor is dequantized
by ``gguf`` and put through the same per-family processor transformers applies
(``modeling_gguf_pytorch_utils.TENSOR_PROCESSORS``: Llama's q/k un-permutation, Gemma's
norm offset) only when its turn comes to be written, so memory stays near the largest
tensor. The names and shapes come from the model built on the meta device, exactly as
transformers maps them. Families whose processor merges or renames tensors (MoE experts,
BLOOM's fused QKV, ...) keep the whole-model path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from layerprune.gguf.files import architecture, check_gguf

DEQUANTIZE_CHUNK = 2**22  # float32 elements (16 MiB) per dequantization step

# Processors that map one GGUF tensor to one transformers tensor of the same name (tensor by tensor is exact).
STREAMABLE = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "granite", "olmo2", "phi3"}


def streamable(path: Path) -> bool:
    return architecture(check_gguf(path)) in STREAMABLE


def write_cache(path: Path, directory: Path, max_shard_bytes: int = 2**30) -> None:
    """Write ``path`` dequantized to fp32 into ``directory`` (config, shards, generation config, tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from layerprune.streaming.shards import write_shards

    config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    config.dtype = torch.float32
    config._name_or_path = str(path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    config.architectures = [type(model).__name__]  # as save_pretrained writes it
    directory.mkdir(parents=True, exist_ok=True)
    write_shards(directory, _planned(path, model), max_shard_bytes)
    config.save_pretrained(directory)
    if model.can_generate():
        GenerationConfig.from_model_config(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).save_pretrained(directory)


def _planned(path: Path, model) -> list:
    """One :class:`PlannedTensor` per model tensor the file holds, each dequantized when written."""
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        load_gguf_checkpoint,
    )

    from layerprune.streaming.shards import PlannedTensor

    reader = check_gguf(path)
    parsed = load_gguf_checkpoint(str(path), return_tensors=False)
    processor = TENSOR_PROCESSORS.get(architecture(reader), TensorProcessor)(config=parsed["config"])
    parsed = {"config": parsed["config"], "tensors": {}}  # not the tokenizer's lists: the producers outlive this
    mapping = get_gguf_hf_weights_map(model, processor)
    shapes = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    planned = []
    for tensor in reader.tensors:
        name = mapping.get(tensor.name)
        if name is not None:
            produce = _producer(tensor, processor, mapping, parsed, shapes[name])
            planned.append(PlannedTensor(name, "F32", shapes[name], produce))
    return planned


def _producer(tensor, processor, mapping, parsed, shape):
    def produce() -> torch.Tensor:
        result = processor.process(
            weights=dequantized(tensor), name=tensor.name, tensor_key_mapping=mapping, parsed_parameters=parsed
        )
        values = torch.from_numpy(np.asarray(result.weights, dtype=np.float32))
        return values.reshape(shape)

    return produce


def dequantized(tensor, chunk_elements: int = DEQUANTIZE_CHUNK) -> np.ndarray:
    """A GGUF reader tensor in float32, dequantized ``chunk_elements`` at a time into one output array.

    ``gguf.dequantize`` builds several temporaries of its input's element count (scales, nibbles,
    offsets); on Qwen2.5-0.5B's 136 M-element Q5_0 embedding that took the peak 1.3 GB above the
    result. Quantized rows hold whole blocks, so rows are dequantized a chunk at a time.
    """
    from gguf import dequantize

    rows = tensor.data.reshape(-1, tensor.data.shape[-1])
    step = max(1, chunk_elements // max(1, int(tensor.n_elements) // len(rows)))
    output = None
    for start in range(0, len(rows), step):
        part = dequantize(rows[start : start + step], tensor.tensor_type).astype(np.float32, copy=False)
        if output is None:
            output = np.empty((len(rows), part.shape[-1]), dtype=np.float32)
        output[start : start + len(part)] = part
    return output.reshape(*tensor.data.shape[:-1], output.shape[-1])


def open_gguf_checkpoint(path: Path, sidecar: Path):
    """A streaming :class:`~layerprune.streaming.Checkpoint` read from the memory-mapped GGUF itself.

    Each tensor is dequantized when a layer asks for it, so scoring and merge candidates stream
    a GGUF without the fp32 copy on disk; ``sidecar`` (written once, a few MB) holds the config,
    generation config and tokenizer that the streaming code reads from a checkpoint directory.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from layerprune.saving import atomic_directory

    if not (sidecar / "config.json").is_file():
        config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        config.dtype = torch.float32
        with torch.device("meta"):
            config.architectures = [type(AutoModelForCausalLM.from_config(config)).__name__]
        with atomic_directory(sidecar, overwrite=True) as tmp:
            config.save_pretrained(tmp)
            GenerationConfig.from_model_config(config).save_pretrained(tmp)
            AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name).save_pretrained(tmp)
    config = AutoConfig.from_pretrained(sidecar)  # as the fp32 cache's Checkpoint reads it
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return _checkpoint_class().from_planned(sidecar, config, _planned(path, model))


def _checkpoint_class():
    from layerprune.streaming.checkpoint import Checkpoint, _layer_prefix

    class GgufCheckpointClass(Checkpoint):
        """A :class:`Checkpoint` whose tensors are produced from a GGUF (fp32, dequantized on read)."""

        @classmethod
        def from_planned(cls, sidecar: Path, config, planned: list) -> Checkpoint:
            from layerprune.models.architectures import decoder_config, get_architecture

            weight_map = {tensor.name: "model.gguf" for tensor in planned}
            arch = get_architecture(config)
            prefix = _layer_prefix(weight_map, arch, getattr(decoder_config(config), arch.layer_count_key))
            checkpoint = cls(sidecar, config, weight_map, prefix)
            checkpoint.planned = {tensor.name: tensor for tensor in planned}
            return checkpoint

        def tensor(self, name: str) -> torch.Tensor:
            return self.planned[name].produce()

        def info(self, name: str) -> tuple[str, list[int]]:
            return "F32", list(self.planned[name].shape)

        def nbytes(self) -> int:
            return sum(tensor.nbytes for tensor in self.planned.values())

    return GgufCheckpointClass
