"""Tiny GGUF files written with the ``gguf`` package's own writer, in Llama, Qwen2 and Gemma-3 layouts.

Types ``gguf`` can quantize are quantized from random weights; the others (K-quants) are
random blocks whose fp16 scale fields are set to small finite values, so that every block
dequantizes to finite numbers of a sane size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, quants

Q = GGMLQuantizationType
HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = 256, 4, 2, 512, 320
HEAD_DIM = HIDDEN // HEADS
# Byte offsets of the fp16 scales inside one block, and the value written there.
_SCALES = {Q.Q2_K: ((80, 82), 1e-3), Q.Q3_K: ((108,), 1e-3), Q.Q4_K: ((0, 2), 1e-3), Q.Q5_K: ((0, 2), 1e-3),
           Q.Q6_K: ((208,), 1e-4)}  # fmt: skip
MIXED = {
    "attn_q": Q.Q4_K, "attn_k": Q.Q5_0, "attn_v": Q.Q6_K, "attn_output": Q.Q4_K,
    "ffn_gate": Q.Q4_K, "ffn_up": Q.Q5_0, "ffn_down": Q.Q6_K,
}  # fmt: skip


def encode(values: np.ndarray, qtype: GGMLQuantizationType, rng: np.random.Generator) -> np.ndarray:
    """``values`` in ``qtype``: quantized by ``gguf`` where it can, else random well-scaled blocks."""
    try:
        return quants.quantize(values, qtype)
    except NotImplementedError:
        block, size = GGML_QUANT_SIZES[qtype]
        rows = rng.integers(0, 256, (values.shape[0], values.shape[1] // block, size), dtype=np.uint8)
        offsets, scale = _SCALES[qtype]
        for offset in offsets:
            rows[..., offset : offset + 2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
        return rows.reshape(values.shape[0], -1)


def _block_shapes(layout: str) -> dict[str, tuple[int, ...]]:
    shapes = {
        "attn_norm": (HIDDEN,), "ffn_norm": (HIDDEN,),
        "attn_q": (HIDDEN, HIDDEN), "attn_k": (KV_HEADS * HEAD_DIM, HIDDEN), "attn_v": (KV_HEADS * HEAD_DIM, HIDDEN),
        "attn_output": (HIDDEN, HIDDEN), "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN),
    }  # fmt: skip
    if layout == "qwen2":
        shapes.update({"attn_q.bias": (HIDDEN,), "attn_k.bias": (KV_HEADS * HEAD_DIM,),
                       "attn_v.bias": (KV_HEADS * HEAD_DIM,)})  # fmt: skip
    if layout == "gemma3":
        shapes.update({"attn_q_norm": (HEAD_DIM,), "attn_k_norm": (HEAD_DIM,), "post_attention_norm": (HIDDEN,),
                       "post_ffw_norm": (HIDDEN,)})  # fmt: skip
    return shapes


def write_tiny_gguf(
    path: Path,
    layout: str = "llama",
    layers: int = 6,
    types: dict[str, GGMLQuantizationType] | None = None,
    per_layer_arrays: bool = False,
    seed: int = 0,
) -> Path:
    """A ``layers``-block model in ``layout`` (llama, qwen2 or gemma3); ``types`` maps block tensor kinds to types.

    ``per_layer_arrays`` writes head counts and feed-forward lengths as per-layer arrays (as
    llama.cpp allows) instead of scalars.
    """
    rng = np.random.default_rng(seed)
    types = MIXED if types is None else types
    writer = GGUFWriter(str(path), layout)
    _metadata(writer, layout, layers, per_layer_arrays)
    writer.add_tensor("token_embd.weight", encode(_weights(rng, (VOCAB, HIDDEN)), Q.Q8_0, rng), raw_dtype=Q.Q8_0)
    writer.add_tensor("output_norm.weight", 1 + 0.1 * _weights(rng, (HIDDEN,)))
    for index in range(layers):
        for kind, shape in _block_shapes(layout).items():
            values = _weights(rng, shape) if len(shape) > 1 else 1 + 0.1 * _weights(rng, shape)
            name = f"blk.{index}.{kind}" + ("" if kind.endswith(".bias") else ".weight")
            qtype = types.get(kind, Q.F32) if len(shape) > 1 else Q.F32
            data = encode(values, qtype, rng)
            writer.add_tensor(name, data, raw_dtype=qtype if data.dtype == np.uint8 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (0.05 * rng.standard_normal(shape)).astype(np.float32)


def _metadata(writer: GGUFWriter, layout: str, layers: int, per_layer: bool) -> None:
    arch = layout
    writer.add_name(f"tiny-{layout}")
    writer.add_uint32(f"{arch}.block_count", layers)
    writer.add_uint32(f"{arch}.context_length", 2048)
    writer.add_uint32(f"{arch}.embedding_length", HIDDEN)
    writer.add_uint32(f"{arch}.vocab_size", VOCAB)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_float32(f"{arch}.rope.freq_base", 10000.0)
    writer.add_uint32(f"{arch}.rope.dimension_count", HEAD_DIM)
    if per_layer:
        writer.add_array(f"{arch}.attention.head_count", [HEADS] * layers)
        writer.add_array(f"{arch}.attention.head_count_kv", [KV_HEADS + i % 2 for i in range(layers)])
        writer.add_array(f"{arch}.feed_forward_length", [FFN + i for i in range(layers)])
    else:
        writer.add_uint32(f"{arch}.attention.head_count", HEADS)
        writer.add_uint32(f"{arch}.attention.head_count_kv", KV_HEADS)
        writer.add_uint32(f"{arch}.feed_forward_length", FFN)
    if layout == "gemma3":
        writer.add_uint32(f"{arch}.attention.key_length", HEAD_DIM)
        writer.add_uint32(f"{arch}.attention.value_length", HEAD_DIM)
        writer.add_uint32(f"{arch}.attention.sliding_window", 4)
    _tokenizer(writer)


def _tokenizer(writer: GGUFWriter) -> None:
    """A byte-level BPE vocabulary of printable ASCII plus 40 merges, padded with control tokens to ``VOCAB``."""
    chars = [chr(c) for c in range(33, 127)] + ["Ġ"]
    merges = list(zip(chars[:40], chars[40:80], strict=True))
    tokens = chars + [a + b for a, b in merges]
    types = [1] * len(tokens) + [3] * (VOCAB - len(tokens))
    tokens += [f"<pad{i}>" for i in range(VOCAB - len(tokens))]
    writer.add_string("tokenizer.ggml.model", "gpt2")
    writer.add_string("tokenizer.ggml.pre", "default")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.token_type", types)
    writer.add_array("tokenizer.ggml.merges", [f"{a} {b}" for a, b in merges])
    writer.add_uint32("tokenizer.ggml.bos_token_id", VOCAB - 2)
    writer.add_uint32("tokenizer.ggml.eos_token_id", VOCAB - 1)
    writer.add_string("tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}")


def float32_copy(source: Path, output: Path) -> Path:
    """``source`` with every tensor dequantized to F32 by ``gguf`` (metadata as is): a file on which llama.cpp's
    matmuls are plain float products, as transformers' are, instead of products with 8-bit-quantized activations."""
    from gguf import GGUFReader, GGUFValueType, dequantize

    reader = GGUFReader(source)
    writer = GGUFWriter(str(output), reader.fields["general.architecture"].contents())
    for key, entry in reader.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            sub_type = entry.types[-1] if entry.types[0] == GGUFValueType.ARRAY else None
            writer.add_key_value(key, entry.contents(), entry.types[0], sub_type)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, dequantize(tensor.data, tensor.tensor_type).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return output
