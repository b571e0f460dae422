"""Perplexity with the standard protocol of the pruning papers (GPTQ, SparseGPT, Wanda, ShortGPT).

The raw test text is joined (``"\\n\\n".join(rows)`` for WikiText-2, ``" ".join`` for PTB
and C4), tokenized once with the tokenizer's default special tokens (so a BOS token, where
the tokenizer adds one, starts only the first window), and split into non-overlapping
windows of ``seq_len`` tokens; the remainder is dropped. Each window is scored on its own
(no context carried over), and

    PPL = exp( Σ_windows Σ_{t=2..T} −log p(x_t | x_<t) / (n_windows · (T − 1)) ),

the mean negative log-likelihood over all predicted tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.config import strict_config
from layerprune.data import load_hub, locate
from layerprune.errors import UserError
from layerprune.models.head import next_token_nll
from layerprune.records import data_suffix, read_jsonl, read_text_file, require_field


@strict_config
class PerplexityOptions:
    """``seq_len`` is capped at the model's context; ``max_windows`` keeps the first N windows (None: all)."""

    seq_len: Annotated[int, Field(ge=2)] = 2048
    max_windows: Annotated[int, Field(ge=1)] | None = None


@dataclass
class PerplexityText:
    """A test text and where it came from (file path or hub id) with how its rows were joined."""

    text: str
    source: str
    join: str
    note: str = ""


@dataclass(frozen=True)
class PerplexitySet:
    """How a named perplexity dataset's test rows become one text (``column`` of its Hub rows)."""

    join: str
    column: str = "text"
    local_note: str = ""


PPL_DATASETS: dict[str, PerplexitySet] = {
    # WikiText-2 raw test split, rows joined with a blank line (GPTQ protocol).
    "wikitext2": PerplexitySet("\n\n"),
    # C4: the first 1,100 validation documents joined with a space (SparseGPT; the count is in its HubSpec).
    "c4": PerplexitySet(" ", local_note="300-document C4 sample, not the validation slice"),
    # Penn Treebank test sentences joined with a space (GPTQ protocol); Hub only.
    "ptb": PerplexitySet(" ", column="sentence"),
}


def wikitext_rows(raw_file: Path) -> list[str]:
    """Rows of the Hugging Face ``wikitext-2-raw-v1`` split from the official ``wiki.*.raw`` file (blank line → "")."""
    return [line if line.strip() else "" for line in read_text_file(raw_file).splitlines(keepends=True)]


def _file_rows(path: Path, column: str) -> list[str]:
    """Rows of a local file: a JSON Lines file's ``column`` field, else the lines of a raw text file."""
    if data_suffix(path) == ".jsonl":
        return [require_field(record, column, f"{path}: record {n}") for n, record in enumerate(read_jsonl(path), 1)]
    return wikitext_rows(path)


def load_text(name: str, data_dir: str | Path | None = None) -> PerplexityText:
    """Text for ``--ppl NAME|PATH``: a named dataset (resolved by :func:`layerprune.data.locate`) or a file.

    A ``.jsonl`` file gives its ``text`` fields joined by a blank line; any other file is read as is.
    """
    location = locate(name, "test", data_dir)
    if location.path is not None:
        if data_suffix(location.path) == ".jsonl":
            return PerplexityText("\n\n".join(_file_rows(location.path, "text")), name, "\\n\\n")
        return PerplexityText(read_text_file(location.path), name, "none (file read as is)")
    spec = PPL_DATASETS[name]
    if location.root is not None:
        (path,) = location.files()
        rows, origin, note = _file_rows(path, spec.column), f"{location.root.origin}: {path}", spec.local_note
    else:
        rows = [row[spec.column] for row in load_hub(location.hub, f"perplexity data {name}")]
        origin, note = location.hub.describe(), ""
    return PerplexityText(spec.join.join(rows), origin, repr(spec.join).strip("'"), note)


def context_length(model: PreTrainedModel) -> int | None:
    """The model's maximum context from its config (``max_position_embeddings`` / ``n_positions``)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def token_windows(ids: torch.Tensor, seq_len: int, max_windows: int | None = None) -> torch.Tensor:
    """Non-overlapping ``[n, seq_len]`` windows of a 1-D id tensor; the remainder is dropped."""
    count = ids.numel() // seq_len
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 0:
        raise UserError(f"the text has {ids.numel()} tokens, fewer than one window of {seq_len}")
    return ids[: count * seq_len].view(count, seq_len)


@torch.no_grad()
def window_nll(model: PreTrainedModel, window: torch.Tensor) -> float:
    """Summed NLL of tokens 2..T of one window given their prefixes."""
    ids = window.unsqueeze(0).to(model.device)
    return next_token_nll(model, {"input_ids": ids}, ids[:, 1:])[0].item()


def perplexity(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    name: str,
    options: PerplexityOptions,
    data_dir: str | Path | None = None,
) -> dict[str, object]:
    """Perplexity of ``model`` on dataset or file ``name`` with the protocol of the module docstring."""
    source = load_text(name, data_dir)
    seq_len = min(options.seq_len, context_length(model) or options.seq_len)
    ids = tokenizer(source.text, return_tensors="pt", verbose=False).input_ids[0]
    windows = token_windows(ids, seq_len, options.max_windows)
    total = sum(window_nll(model, w) for w in tqdm(windows, desc=f"perplexity {name}", unit="window"))
    predicted = windows.shape[0] * (seq_len - 1)
    bos_id = tokenizer.bos_token_id
    return {
        "ppl": math.exp(total / predicted),
        "nll": total / predicted,
        "predicted_tokens": predicted,
        "windows": windows.shape[0],
        "seq_len": seq_len,
        "text_tokens": ids.numel(),
        "bos": "first window only" if bos_id is not None and ids[0].item() == bos_id else "none",
        "source": source.source,
        "join": source.join,
        "note": source.note,
        "max_windows": options.max_windows,
    }
