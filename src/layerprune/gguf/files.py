"""Reading GGUF files with what the loader reads them with: the ``gguf`` package's :class:`GGUFReader`.

transformers' ``from_pretrained(gguf_file=...)`` parses every architecture it has no
packed-weight path for with ``gguf.GGUFReader`` and dequantizes with ``gguf.dequantize``
(``modeling_gguf_pytorch_utils.load_gguf_checkpoint``); only the architectures listed in
``transformers.integrations.gguf.GGUF_ARCHS`` go through its own header reader. So
:func:`check_gguf` accepts a file exactly when that path would: the header parses, the
tensor data is all there, and ``gguf`` can dequantize every tensor type in it.
"""

from __future__ import annotations

import functools
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from layerprune.errors import UserError

GGUF_MAGIC = b"GGUF"
SPLIT_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
# What GGUFReader raises on a truncated or corrupt file (a short memmap slice fails to index or reshape).
READ_ERRORS = (ValueError, KeyError, IndexError, EOFError, OSError, struct.error, UnicodeDecodeError)


def check_gguf(path: str | Path):
    """The file's :class:`gguf.GGUFReader`; a :class:`UserError` if the loader could not read it.

    Rejects a split file (``-00001-of-0000N``), a header that does not parse or tensor data
    cut short (the reader's views of the data then fail), and tensor types ``gguf`` cannot
    dequantize; for an architecture transformers reads with its own header reader, also what
    that reader rejects.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return _checked(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _checked(path: Path, size: int, mtime_ns: int):
    """One parse per file version (the header of a 100 MB GGUF with a 49k-token vocabulary takes seconds)."""
    check_not_split(path)
    reader = _read(path)
    _check_types(reader, path)
    _check_transformers_reader(reader, path)
    return reader


def check_not_split(path: Path) -> None:
    if SPLIT_NAME.search(path.name):
        raise UserError(
            f"{path.name} is one part of a split GGUF, which layerprune does not read; "
            "merge the parts first with llama.cpp's llama-gguf-split --merge"
        )


def _read(path: Path):
    try:
        return _reader_class()(path)
    except READ_ERRORS as error:
        raise UserError(f"cannot read GGUF file {path}: truncated or corrupt ({first_line(error)})") from None


def _reader_class():
    from gguf import GGUFReader

    class PlainViewReader(GGUFReader):
        """GGUFReader over a plain ``ndarray`` view of its memory map: the same bytes, parsed 3-4x faster.

        Every slice of an ``np.memmap`` runs ``memmap.__array_finalize__``, and the reader takes
        one slice per vocabulary string; a plain view of the same mapping skips that.
        """

        @property
        def data(self) -> np.ndarray:
            return self._data

        @data.setter
        def data(self, value: np.ndarray) -> None:
            self._data = value.view(np.ndarray)

    return PlainViewReader


def _check_types(reader, path: Path) -> None:
    from gguf import GGML_QUANT_SIZES, dequantize

    for ggml_type in {t.tensor_type for t in reader.tensors}:
        _, size = GGML_QUANT_SIZES[ggml_type]
        try:
            dequantize(np.zeros((1, size), dtype=np.uint8), ggml_type)
        except NotImplementedError:
            raise UserError(
                f"GGUF file {path} holds {ggml_type.name} tensors, which the gguf package cannot dequantize"
            ) from None


def _check_transformers_reader(reader, path: Path) -> None:
    """Architectures transformers reads with its own header reader (not ``gguf``) must pass that reader too."""
    from transformers.integrations.gguf.utils import is_gguf_arch_supported

    if not is_gguf_arch_supported(architecture(reader)):
        return
    from transformers.integrations.gguf import GgufHeader

    try:
        GgufHeader.from_file(str(path))
    except READ_ERRORS as error:
        raise UserError(f"transformers cannot read GGUF file {path}: {first_line(error)}") from None


def architecture(reader) -> str:
    return field_value(reader, "general.architecture")


def block_count(reader) -> int:
    return int(field_value(reader, f"{architecture(reader)}.block_count"))


def field_value(reader, key: str) -> Any:
    """A metadata value as Python data (``None`` if absent)."""
    field = reader.get_field(key)
    return None if field is None else field.contents()


def is_gguf_file(path: str | Path) -> bool:
    """Whether ``path`` is an existing file starting with the GGUF magic bytes."""
    path = Path(path)
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
