"""Calibration data: random windows of ``seq_len`` tokens from real text, reproducible for a seed.

``CalibrationConfig(source, samples, seq_len, seed)`` names the text; :func:`load_calibration`
tokenizes it and draws ``samples`` windows. Sources:

* ``default``: the Python Language Reference as shipped inside CPython itself
  (``pydoc_data.topics``, the text that ``help("if")`` prints: 79 topics, about 465k
  characters of English prose with grammar snippets). It works offline on any fresh install.
* ``wikitext2``, ``c4``, ``bookcorpus``, ``pg19``, ``dolly``, ``alpaca``, ``oasst1``: training
  text resolved by :func:`layerprune.data.locate` (a local data folder, ``$LAYERPRUNE_DATA``, the
  embedded slices, else the Hugging Face hub; Hub ids in :data:`layerprune.data.SOURCES`).
  Never an evaluation test split.
* a local file: ``.txt`` (the whole file is one document), ``.jsonl``/``.json`` (one
  document per record: its ``text`` field, or an instruction record's
  ``instruction``/``input``/``output`` flattened; Dolly's ``context``/``response`` are read
  as ``input``/``output``), or ``.parquet`` (records as for JSON).

Windows: every document is tokenized without special tokens. A window is drawn uniformly
from all start positions of all documents that hold at least ``seq_len`` tokens (with
replacement), so the same seed gives the same windows. If the tokenizer puts a BOS token in
front of text by default (Llama 2, Gemma), each window starts with it and takes
``seq_len − 1`` text tokens. All windows are full, so ``attention_mask`` is all ones.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import Field
from transformers import PreTrainedTokenizerBase

from layerprune.config import strict_config
from layerprune.data import load_hub, locate
from layerprune.errors import UserError
from layerprune.records import data_suffix, read_json, read_jsonl, read_parquet, read_text_file


@strict_config
class CalibrationConfig:
    """Which text to calibrate on and how much of it (the paper's default is 10 × 128 tokens)."""

    source: str = "default"
    samples: Annotated[int, Field(ge=1)] = 10
    seq_len: Annotated[int, Field(ge=2)] = 128
    seed: int = 0


@dataclass
class CalibrationSet:
    """``samples`` windows of ``seq_len`` token ids with their attention mask (1 = real token)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    config: CalibrationConfig

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive ``(input_ids, attention_mask)`` slices of at most ``batch_size`` windows."""
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        for start in range(0, len(self.input_ids), batch_size):
            yield self.input_ids[start : start + batch_size], self.attention_mask[start : start + batch_size]

    def __len__(self) -> int:
        return len(self.input_ids)


DEFAULT_SOURCE = "default"
# Sources whose rows are sentences or lines of one text: joined with blank lines into one document (SparseGPT/SLEB).
JOINED_ROWS = {"wikitext2", "bookcorpus"}
_FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


def load_calibration(tokenizer: PreTrainedTokenizerBase, config: CalibrationConfig) -> CalibrationSet:
    """Tokenize ``config.source`` and draw ``config.samples`` random windows of ``config.seq_len`` tokens."""
    prefix = _bos_prefix(tokenizer)
    length = config.seq_len - len(prefix)
    documents = [ids for ids in _tokenize(tokenizer, read_documents(config.source)) if ids]
    windows = _sample_windows(documents, length, config)
    input_ids = torch.tensor([prefix + window for window in windows], dtype=torch.long)
    return CalibrationSet(input_ids, torch.ones_like(input_ids), config)


def read_documents(source: str) -> list[str]:
    """The documents of a calibration source (resolved by :func:`layerprune.data.locate`; see the module docstring)."""
    location = locate(source, "train")
    if source == DEFAULT_SOURCE:
        return _python_reference_topics()
    if location.hub is not None:
        texts = [record_text(row) for row in load_hub(location.hub, f"calibration source {source!r}")]
        return ["\n\n".join(texts)] if source in JOINED_ROWS else texts
    (path,) = location.files()
    return _file_documents(path)


def _python_reference_topics() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[name] for name in sorted(topics)]


def _file_documents(path: Path) -> list[str]:
    suffix = data_suffix(path)
    if suffix == ".txt":
        return [read_text_file(path)]
    if suffix == ".parquet":
        records: Iterable[Any] = read_parquet(path)
    elif suffix == ".jsonl":
        records = read_jsonl(path)
    elif suffix == ".json":
        records = read_json(path)
        records = records if isinstance(records, list) else [records]
    else:
        raise UserError(
            f"calibration file {path}: unsupported type {suffix or '(none)'}; use {'/'.join(_FILE_SUFFIXES)}"
        )
    return [record_text(record, path) for record in records]


def record_text(record: Any, origin: Path | str = "dataset") -> str:
    """A record's text: its ``text`` field, or instruction/input/output joined by blank lines."""
    if isinstance(record, str):
        return record
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record["text"]
    if isinstance(record, dict) and "instruction" in record:
        parts = [
            record.get("instruction"),
            record.get("input", record.get("context")),
            record.get("output", record.get("response")),
        ]
        return "\n\n".join(str(part) for part in parts if part)
    keys = sorted(record) if isinstance(record, dict) else type(record).__name__
    raise UserError(f"calibration record in {origin} has no 'text' or 'instruction' field (found {keys})")


def _tokenize(tokenizer: PreTrainedTokenizerBase, documents: list[str]) -> list[list[int]]:
    if not documents:
        return []
    return tokenizer(documents, add_special_tokens=False)["input_ids"]


def _bos_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """``[bos]`` if the tokenizer puts BOS in front of text by default, else ``[]``."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if bos is not None and ids[:1] == [bos] else []


def _sample_windows(documents: list[list[int]], length: int, config: CalibrationConfig) -> list[list[int]]:
    """``config.samples`` windows of ``length`` tokens, uniform over all valid (document, start) pairs."""
    eligible = [ids for ids in documents if len(ids) >= length]
    if not eligible:
        longest = max((len(ids) for ids in documents), default=0)
        total = sum(len(ids) for ids in documents)
        raise UserError(
            f"calibration source {config.source!r} is too short for --seq-len {config.seq_len}: its longest "
            f"document has {longest} tokens ({total} tokens in {len(documents)} documents); "
            f"need at least {length} tokens in one document"
        )
    available = sum(len(ids) for ids in eligible)
    if available < config.samples * length:
        raise UserError(
            f"calibration source {config.source!r} is too short for {config.samples} windows of {length} tokens "
            f"({config.samples * length} tokens): its documents of at least {length} tokens hold {available}; "
            "lower --samples or --seq-len"
        )
    ends = list(itertools.accumulate(len(ids) - length + 1 for ids in eligible))
    generator = torch.Generator().manual_seed(config.seed)
    positions = torch.randint(ends[-1], (config.samples,), generator=generator).tolist()
    windows = []
    for position in positions:
        document = bisect.bisect_right(ends, position)
        start = position - (ends[document - 1] if document else 0)
        windows.append(eligible[document][start : start + length])
    return windows
