"""What happened to a model: its dense source, which source layers remain, and each step.

A :class:`Provenance` travels with the in-memory model (as an attribute) and is written to
``layerprune.json`` next to the saved weights, so that removed-layer indices always refer
to the original dense model, also after several prune, merge or heal steps, and so that
healing can find the dense model to distil from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

RECORD_FILE = "layerprune.json"
_ATTRIBUTE = "_layerprune_provenance"
_VERSIONED_PACKAGES = ("layerprune", "torch", "transformers", "accelerate", "peft", "lm_eval", "datasets")


@dataclass
class Provenance:
    """``layer_map[i]`` is the source-model index of the model's current layer ``i``."""

    source: str
    source_num_layers: int
    layer_map: list[int]
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def removed_layers(self) -> list[int]:
        """Source-model indices no longer present as their own layer (deleted or merged away)."""
        kept = set(self.layer_map)
        return [i for i in range(self.source_num_layers) if i not in kept]

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["removed_layers"] = self.removed_layers
        record["num_layers"] = len(self.layer_map)
        record["versions"] = package_versions()
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Provenance:
        return cls(
            source=record["source"],
            source_num_layers=record["source_num_layers"],
            layer_map=list(record["layer_map"]),
            steps=list(record.get("steps", [])),
        )


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            continue
    return versions


def get_provenance(model: PreTrainedModel) -> Provenance:
    """The model's provenance; a model not touched by layerprune is its own source."""
    existing = getattr(model, _ATTRIBUTE, None)
    if existing is not None:
        return existing
    from layerprune.models.architectures import num_layers

    count = num_layers(model)
    source = str(getattr(model.config, "_name_or_path", "") or "unknown")
    provenance = Provenance(source=source, source_num_layers=count, layer_map=list(range(count)))
    set_provenance(model, provenance)
    return provenance


def set_provenance(model: PreTrainedModel, provenance: Provenance) -> None:
    object.__setattr__(model, _ATTRIBUTE, provenance)


def record_step(model: PreTrainedModel, stage: str, **details: Any) -> None:
    """Append one step (``stage`` plus JSON-serialisable details) to the model's provenance."""
    get_provenance(model).steps.append({"stage": stage, **details})


def read_record(model_dir: str | Path) -> dict[str, Any] | None:
    path = Path(model_dir) / RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else None
