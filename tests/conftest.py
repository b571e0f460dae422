"""Shared fixtures: tiny models live in ``tiny_models.py``; benchmark data is read in place from ``../shared/data``.

The product never reads ``../shared/data``; the tests and benches do, as one configured data
folder (``$LAYERPRUNE_DATA`` or ``<repo>/../shared/data``). Tests that need it beyond the
embedded slices carry the ``shared_data`` marker (added automatically for the ``data_dir``
fixture). Without the folder they skip and say why; under ``LAYERPRUNE_REQUIRE_SHARED_DATA=1``
(set by ``.ci/run``) they fail instead, so CI cannot pass by skipping them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REQUIRE_VARIABLE = "LAYERPRUNE_REQUIRE_SHARED_DATA"


def shared_data_dir() -> Path:
    """``$LAYERPRUNE_DATA`` or ``<repo>/../shared/data`` (not checked)."""
    configured = os.environ.get("LAYERPRUNE_DATA")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared_data)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shared_data") is None or shared_data_dir().is_dir():
        return
    message = f"needs the benchmark data folder, not found at {shared_data_dir()} (set LAYERPRUNE_DATA)"
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{message}; {REQUIRE_VARIABLE}=1 forbids skipping it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data folder (tests using it are marked ``shared_data``)."""
    return shared_data_dir()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep GGUF caches of tests apart from the user's, but share one across the session."""
    if "LAYERPRUNE_CACHE" not in os.environ:
        monkeypatch.setenv("LAYERPRUNE_CACHE", str(tmp_path_factory.getbasetemp() / "layerprune-cache"))
