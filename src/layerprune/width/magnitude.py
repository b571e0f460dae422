"""Channel/head magnitude: the data-free width baseline."""

from __future__ import annotations

import torch

from layerprune.width.base import ColumnRequest, lowest, register_width_method


@register_width_method("magnitude")
def magnitude(request: ColumnRequest) -> tuple[list[int], torch.Tensor]:
    """Score of a group S = ‖W_{:,S}‖_F (its output-projection columns); no compensation."""
    scores = request.weight[:, request.groups].pow(2).sum(dim=(0, 2))
    return lowest(scores, request.count), request.weight
