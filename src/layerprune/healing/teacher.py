"""The distillation teacher: by default the dense model the pruned one was cut from, frozen, in inference mode."""

from __future__ import annotations

import logging

from transformers import PreTrainedModel

from layerprune.errors import UserError
from layerprune.models import load_model
from layerprune.provenance import get_provenance

logger = logging.getLogger(__name__)


def load_teacher(student: PreTrainedModel, spec: str = "source", cache_dir: str | None = None) -> PreTrainedModel:
    """Load ``spec`` (``"source"``: the student's provenance source) frozen, in the student's dtype.

    ``cache_dir`` is where a GGUF teacher is dequantized (see :func:`~layerprune.models.load_model`).

    ``"source"`` needs a student that layerprune changed (its provenance records a step);
    an unchanged model is its own source, and distilling from itself would teach nothing.
    """
    resolved = known_source(student) if spec == "source" else spec
    try:
        teacher, _ = load_model(resolved, dtype=student.dtype, cache_dir=cache_dir)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load the teacher {resolved!r} ({error}); pass --teacher SPEC") from None
    check_vocabulary(student, teacher)
    logger.info("teacher %s: %.1f MB of weights", resolved, teacher_bytes(teacher) / 1e6)
    return prepare_teacher(teacher)


def known_source(student: PreTrainedModel) -> str:
    """The dense model ``student`` was cut from; a :class:`UserError` asking for ``--teacher`` if none is recorded."""
    provenance = get_provenance(student)
    if not provenance.steps:
        raise UserError(
            f"no teacher known for {provenance.source}: it has no layerprune.json naming the dense model it was "
            "cut from, and distilling from itself teaches nothing; pass --teacher MODEL"
        )
    return provenance.source


def prepare_teacher(teacher: PreTrainedModel) -> PreTrainedModel:
    """Frozen and in eval mode (no dropout, no gradients)."""
    return teacher.eval().requires_grad_(False)


def check_vocabulary(student: PreTrainedModel, teacher: PreTrainedModel) -> None:
    sizes = [m.get_output_embeddings().weight.shape[0] for m in (student, teacher)]
    if sizes[0] != sizes[1]:
        raise UserError(f"student and teacher vocabularies differ ({sizes[0]} vs {sizes[1]}); kd needs the same one")


def teacher_bytes(teacher: PreTrainedModel | None) -> int:
    """Memory held by the teacher's weights (the extra memory distillation costs, besides its activations)."""
    if teacher is None:
        return 0
    return sum(p.numel() * p.element_size() for p in teacher.parameters())
