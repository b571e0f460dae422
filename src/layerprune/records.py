"""Reading the user's data files (text, JSON, JSON Lines, Parquet) with one-line errors.

Calibration text and healing data both come from such files. Every problem a user can fix
is a :class:`~layerprune.errors.UserError` that names the file (and, for JSON Lines, the
line): ``data.jsonl:7: not valid JSON (Expecting ',' delimiter, column 12)``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from layerprune.errors import UserError


def file_sha256(path: str | Path) -> str:
    """The file's SHA-256 as hex, read in 4 MiB blocks (memory stays flat for multi-GB weights)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def data_suffix(path: Path) -> str:
    """The format suffix, looking through a ``.gz`` (``x.jsonl.gz`` → ``.jsonl``), lowercase."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    return suffixes[-2] if suffixes[-1:] == [".gz"] and len(suffixes) > 1 else path.suffix.lower()


def read_text_file(path: Path) -> str:
    """The file's text as UTF-8 (a ``.gz`` is decompressed); a binary or unreadable file is a :class:`UserError`."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                return handle.read()
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text (byte {error.start} is 0x{error.object[error.start]:02x})") from None
    except (OSError, EOFError) as error:
        raise UserError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None


def read_jsonl(path: Path) -> list[Any]:
    """One JSON value per non-empty line."""
    values = []
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if line.strip():
            values.append(_parse(line, f"{path}:{number}"))
    return values


def read_json(path: Path) -> Any:
    """The file's one JSON value."""
    return _parse(read_text_file(path), str(path))


def read_json_object(path: Path, what: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The file's JSON object, holding ``keys``; anything else is a :class:`UserError` naming ``what`` it should be."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise UserError(f"{path}: not {what} (expected a JSON object, got {type(value).__name__})")
    missing = [key for key in keys if key not in value]
    if missing:
        raise UserError(f"{path}: not {what} (no {missing[0]!r} field)")
    return value


def read_parquet(path: Path) -> list[dict[str, Any]]:
    """The rows of a Parquet file as dicts."""
    import pyarrow
    import pyarrow.parquet

    try:
        return pyarrow.parquet.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as error:
        raise UserError(f"{path}: not a readable Parquet file ({str(error).strip().splitlines()[0]})") from None


def _parse(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        position = f"line {error.lineno} column {error.colno}" if error.lineno > 1 else f"column {error.colno}"
        raise UserError(f"{where}: not valid JSON ({error.msg}, {position})") from None


def require_field(record: Any, field: str, where: str) -> Any:
    """``record[field]``, or a :class:`UserError` naming the record and the fields it has."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object with a {field!r} field, found {type(record).__name__}")
    if field not in record:
        raise UserError(f"{where}: no {field!r} field (found {', '.join(map(repr, sorted(record))) or 'none'})")
    return record[field]
