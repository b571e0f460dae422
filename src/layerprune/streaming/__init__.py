"""Larger than memory: surgery and scoring that read a safetensors checkpoint one tensor or one layer at a time."""

from layerprune.streaming.checkpoint import Checkpoint
from layerprune.streaming.surgery import open_checkpoint, stream_keep, stream_merge, stream_remove

__all__ = ["Checkpoint", "open_checkpoint", "stream_keep", "stream_merge", "stream_remove"]
