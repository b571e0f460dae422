"""llama.cpp itself (the xllamacpp wheel) on directly pruned GGUFs of the embedded model; nothing mocked.

llama.cpp multiplies quantized weights with activations quantized to 8 bits (``vec_dot_q4_1_q8_1``
for the embedded Q4_1 file), transformers with float activations, so on the Q4_1 file their greedy
tokens part at small logit gaps, pruned or not (measured: the dense file too). Token equality is
therefore asserted on an F32 copy made by ``gguf`` (the same values transformers loads), pruned by
the same direct surgery; the Q4_1 file's agreement is printed. Steps where the two differ at a
top-2 logit gap below 0.05 are reported, not failed.
"""

from __future__ import annotations

import pytest
import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer

from gguf_files import float32_copy
from layerprune.gguf.llamacpp import compare_greedy, llamacpp_generate
from layerprune.gguf.surgery import remove_gguf_layers
from layerprune.models.loading import default_gguf_path

pytestmark = pytest.mark.slow
REMOVED = list(range(20, 28))
PROMPTS = ["The capital of France is", "def fibonacci(n):"]


def _transformers(path):
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model, [tokenizer(text).input_ids for text in PROMPTS]


def _check(path, expected_layers):
    model, prompts = _transformers(path)
    run = llamacpp_generate(path, prompts, n_predict=16)
    assert run.n_layer == expected_layers
    comparison = compare_greedy(model, prompts, run)
    print(f"{path.name}: llama.cpp n_layer {run.n_layer}, matched steps {comparison.matched}, ties {comparison.ties}")
    return comparison


def test_pruned_f32_gguf_decodes_in_llama_cpp_as_in_transformers(tmp_path):
    dense = float32_copy(default_gguf_path(), tmp_path / "dense-f32.gguf")
    remove_gguf_layers(dense, tmp_path / "pruned-f32.gguf", REMOVED)
    comparison = _check(tmp_path / "pruned-f32.gguf", 30 - len(REMOVED))
    assert comparison.mismatches == []


def test_pruned_q4_1_gguf_loads_in_llama_cpp_with_its_block_count(tmp_path, capsys):
    remove_gguf_layers(default_gguf_path(), tmp_path / "pruned.gguf", REMOVED)
    assert GGUFReader(tmp_path / "pruned.gguf").fields["llama.block_count"].contents() == 22
    comparison = _check(tmp_path / "pruned.gguf", 22)
    assert sum(comparison.matched) >= 1  # the first greedy token agrees; later ones are printed above


def test_exported_merged_model_decodes_in_llama_cpp_as_the_saved_directory_in_transformers(tmp_path):
    """A model whose weights changed (two fused groups) goes out through llama.cpp's converter (F32, lossless)."""
    from layerprune.cli import main

    saved = tmp_path / "merged"
    assert main(["merge", "--groups", "20-23,24-27", "--merge-op", "mean", "--output", str(saved),
                 "--export", "gguf:f32"]) == 0  # fmt: skip
    _check_export(saved, 24)


def _check_export(saved, layers: int):
    """llama.cpp loads ``saved/model-f32.gguf`` with ``layers`` blocks and decodes as transformers on ``saved``."""
    model = AutoModelForCausalLM.from_pretrained(str(saved), dtype=torch.float32).eval()
    prompts = [AutoTokenizer.from_pretrained(str(saved))(text).input_ids for text in PROMPTS]
    run = llamacpp_generate(saved / "model-f32.gguf", prompts, n_predict=16)
    assert run.n_layer == layers
    comparison = compare_greedy(model, prompts, run)
    print(f"exported {saved.name}: matched steps {comparison.matched}, ties {comparison.ties}")
    assert comparison.mismatches == []
    return model


def test_exported_healed_model_decodes_in_llama_cpp_as_the_saved_directory_in_transformers(tmp_path):
    """One partial healing step (untied head) changes the weights; the F32 export decodes as the saved directory."""
    from layerprune.cli import main

    saved = tmp_path / "healed"
    assert main(["heal", "--model", "default", "--untie", "--max-steps", "1", "--train-batch-size", "1",
                 "--heal-seq-len", "64", "--max-examples", "8", "--validation-size", "0", "--lr", "1e-3",
                 "--warmup", "0", "--output", str(saved), "--export", "gguf:f32"]) == 0  # fmt: skip
    model = _check_export(saved, 30)
    assert not model.config.tie_word_embeddings
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)  # the step changed the head
