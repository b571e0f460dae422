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

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from pydantic import Field
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from layerprune.config import strict_config
from layerprune.errors import UserError
from layerprune.models.head import next_token_nll
from layerprune.registry import Registry


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


PPL_DATASETS: Registry[Callable[[Path | None], PerplexityText]] = Registry("perplexity dataset")


def wikitext_rows(raw_file: Path) -> list[str]:
    """Rows of the Hugging Face ``wikitext-2-raw-v1`` split from the official ``wiki.*.raw`` file (blank line → "")."""
    return [line if line.strip() else "" for line in raw_file.read_text(encoding="utf-8").splitlines(keepends=True)]


@PPL_DATASETS.register("wikitext2")
def wikitext2(data_dir: Path | None) -> PerplexityText:
    """WikiText-2 raw test split, rows joined with a blank line (GPTQ protocol)."""
    if data_dir is not None:
        path = data_dir / "wikitext2" / "raw" / "wiki.test.raw"
        if not path.is_file():
            raise UserError(f"perplexity data file not found: {path}")
        return PerplexityText("\n\n".join(wikitext_rows(path)), str(path), "\\n\\n")
    rows = _hub_rows("wikitext", "wikitext-2-raw-v1", "test", "text")
    return PerplexityText("\n\n".join(rows), "wikitext/wikitext-2-raw-v1:test", "\\n\\n")


@PPL_DATASETS.register("ptb")
def ptb(data_dir: Path | None) -> PerplexityText:
    """Penn Treebank test sentences joined with a space (GPTQ protocol); hub only."""
    rows = _hub_rows("ptb_text_only", "penn_treebank", "test", "sentence")
    return PerplexityText(" ".join(rows), "ptb_text_only:test", " ")


@PPL_DATASETS.register("c4")
def c4(data_dir: Path | None) -> PerplexityText:
    """C4: the first 1,100 validation documents joined with a space (SparseGPT); locally, ``c4_sample``."""
    if data_dir is not None:
        path = data_dir / "c4_sample" / "c4_demo.jsonl"
        if not path.is_file():
            raise UserError(f"perplexity data file not found: {path}")
        texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return PerplexityText(" ".join(texts), str(path), " ", "300-document C4 sample, not the validation slice")
    files = {"validation": "en/c4-validation.00000-of-00008.json.gz"}
    rows = _hub_rows("allenai/c4", None, "validation", "text", data_files=files)[:1100]
    return PerplexityText(" ".join(rows), "allenai/c4:en/c4-validation.00000-of-00008[:1100]", " ")


def _hub_rows(path: str, name: str | None, split: str, column: str, **kwargs) -> list[str]:
    import datasets

    try:
        return list(datasets.load_dataset(path, name, split=split, **kwargs)[column])
    except (ConnectionError, OSError) as error:
        message = f"could not load {path} from the hub ({error}); offline, pass --data-dir or a text file"
        raise UserError(message) from None


def load_text(name: str, data_dir: str | Path | None = None) -> PerplexityText:
    """Text for ``--ppl NAME|PATH``: a registered dataset, or a local ``.txt`` (read as is) / ``.jsonl`` (``text``)."""
    if name in PPL_DATASETS:
        return PPL_DATASETS.get(name)(Path(data_dir) if data_dir is not None else None)
    path = Path(name)
    if not path.is_file():
        raise UserError(f"{PPL_DATASETS.unknown_message(name)} (or give the path of a text file)")
    if path.suffix == ".jsonl":
        texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return PerplexityText("\n\n".join(texts), str(path), "\\n\\n")
    return PerplexityText(path.read_text(encoding="utf-8"), str(path), "none (file read as is)")


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
