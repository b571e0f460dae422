"""Shared fixtures: tiny models live in ``tiny_models.py``; real data is read in place from ``../shared/data``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerprune.data_paths import data_dir as shared_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared benchmark data (``$LAYERPRUNE_DATA`` or ``<repo>/../shared/data``); skip if absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep GGUF caches of tests apart from the user's, but share one across the session."""
    if "LAYERPRUNE_CACHE" not in os.environ:
        monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path_factory.getbasetemp() / "layerprune-cache"))
