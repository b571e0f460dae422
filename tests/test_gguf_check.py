"""``check_gguf`` accepts every file the loader (gguf's reader and dequantizer, via transformers) accepts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGUFReader, dequantize
from transformers import AutoModelForCausalLM

from gguf_files import Q, write_tiny_gguf
from layerprune.errors import UserError
from layerprune.gguf.files import check_gguf

TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K]
# Tensors transformers loads without permuting them (attn_q/attn_k are un-permuted for Llama).
UNPERMUTED = {"attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
              "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}  # fmt: skip


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
def test_every_tensor_type_passes_the_check_and_loads_as_gguf_dequantizes_it(tmp_path, qtype):
    kinds = ("attn_q", "attn_k", *UNPERMUTED)
    path = write_tiny_gguf(tmp_path / f"tiny-{qtype.name}.gguf", "llama", layers=2, types=dict.fromkeys(kinds, qtype))
    reader = check_gguf(path)
    assert {t.tensor_type for t in reader.tensors if t.name.startswith("blk.") and t.data.ndim == 2} == {qtype}
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name, dtype=torch.float32)
    tensors = {t.name: t for t in GGUFReader(path).tensors}
    for layer in range(2):
        for kind, module in UNPERMUTED.items():
            tensor = tensors[f"blk.{layer}.{kind}.weight"]
            expected = dequantize(tensor.data, tensor.tensor_type)
            loaded = model.get_submodule(f"model.layers.{layer}.{module}").weight.detach().numpy()
            assert np.isfinite(expected).all()
            np.testing.assert_array_equal(loaded, expected.astype(np.float32))


def test_a_truncated_file_is_one_line_error(tmp_path):
    data = write_tiny_gguf(tmp_path / "full.gguf", "llama", layers=2).read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 1000])
    with pytest.raises(UserError, match="truncated or corrupt") as caught:
        check_gguf(tmp_path / "cut.gguf")
    assert "\n" not in str(caught.value)


def test_a_corrupt_tensor_type_is_one_line_error(tmp_path):
    path = write_tiny_gguf(tmp_path / "full.gguf", "llama", layers=2)
    reader = GGUFReader(path)
    field = reader.tensors[0].field
    offset = int(field.offset) + sum(int(part.nbytes) for part in field.parts[:4])  # name len, name, n_dims, dims
    data = bytearray(path.read_bytes())
    data[offset : offset + 4] = (250).to_bytes(4, "little")
    (tmp_path / "bad.gguf").write_bytes(bytes(data))
    with pytest.raises(UserError, match="truncated or corrupt") as caught:
        check_gguf(tmp_path / "bad.gguf")
    assert "\n" not in str(caught.value)


def test_a_split_part_is_refused(tmp_path):
    path = write_tiny_gguf(tmp_path / "model-00001-of-00002.gguf", "llama", layers=2)
    with pytest.raises(UserError, match="split GGUF"):
        check_gguf(path)
