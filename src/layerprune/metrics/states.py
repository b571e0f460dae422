"""Hidden states kept between layers of a layer-wise pass: in memory up to a budget, memory-mapped on disk beyond it.

A layer-wise pass (:mod:`layerprune.metrics.layerwise`) holds, for every calibration
batch, the state of each stream it follows. For a 70B model with 16 × 128 tokens these
states are gigabytes, so beyond ``budget`` bytes each new state is written to its own
file in a temporary directory and read back through ``numpy.memmap`` (the page cache,
not the process, then holds it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch


class StateStore:
    """``key → tensor`` with at most ``budget`` bytes in memory (``None``: no limit); the rest on disk."""

    def __init__(self, budget: int | None = None, directory: str | Path | None = None) -> None:
        self.budget = budget
        self.in_memory: dict[Hashable, torch.Tensor] = {}
        self.on_disk: dict[Hashable, tuple[Path, torch.dtype, torch.Size]] = {}
        self.memory_bytes = 0
        self.peak_disk_bytes = 0
        self._directory = directory
        self._temporary: tempfile.TemporaryDirectory | None = None
        self._files = 0

    def put(self, key: Hashable, tensor: torch.Tensor) -> None:
        """Store ``tensor`` under ``key`` (replacing what was there).

        A view into a larger tensor (one stream's part of a stacked layer output) is copied:
        kept as a view, it would keep the whole stacked output alive, uncounted by the budget.
        """
        self.pop(key)
        size = tensor.numel() * tensor.element_size()
        if tensor.untyped_storage().nbytes() > size:
            tensor = tensor.clone()
        if self.budget is None or self.memory_bytes + size <= self.budget:
            self.in_memory[key] = tensor
            self.memory_bytes += size
        else:
            self.on_disk[key] = self._write(tensor)
            self.peak_disk_bytes = max(self.peak_disk_bytes, self.disk_bytes)

    def get(self, key: Hashable, device: torch.device) -> torch.Tensor:
        if key in self.in_memory:
            return self.in_memory[key].to(device)
        path, dtype, shape = self.on_disk[key]
        raw = torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="c", shape=(shape.numel() * dtype.itemsize,)))
        return raw.view(dtype).reshape(shape).to(device)

    def pop(self, key: Hashable) -> None:
        if key in self.in_memory:
            tensor = self.in_memory.pop(key)
            self.memory_bytes -= tensor.numel() * tensor.element_size()
        elif key in self.on_disk:
            self.on_disk.pop(key)[0].unlink()

    @property
    def disk_bytes(self) -> int:
        return sum(shape.numel() * dtype.itemsize for _, dtype, shape in self.on_disk.values())

    def close(self) -> None:
        """Forget every state and delete the files."""
        self.in_memory.clear()
        self.on_disk.clear()
        self.memory_bytes = 0
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def _write(self, tensor: torch.Tensor) -> tuple[Path, torch.dtype, torch.Size]:
        if self._temporary is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="layerprune-states-", dir=self._directory)
        self._files += 1
        path = Path(self._temporary.name) / f"{self._files}.bin"
        flat = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        flat.numpy().tofile(path)
        return path, tensor.dtype, tensor.shape
