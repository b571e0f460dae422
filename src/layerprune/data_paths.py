"""Where the shared offline data lives: ``$LAYERPRUNE_DATA``, else ``<repo root>/../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

from layerprune.errors import UserError

_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The data directory (not checked for existence; see :func:`data_file`)."""
    configured = os.environ.get("LAYERPRUNE_DATA")
    return Path(configured) if configured else _REPO_ROOT.parent / "shared" / "data"


def data_file(relative: str) -> Path:
    """A file inside :func:`data_dir`; a missing file is a :class:`UserError` naming the variable to set."""
    path = data_dir() / relative
    if not path.is_file():
        raise UserError(f"data file {path} not found; set LAYERPRUNE_DATA to the shared data directory")
    return path
