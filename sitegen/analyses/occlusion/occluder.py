"""The grey square of occlusion: where it goes, how many occluded copies per forward, drawing it.

Shared by :func:`~sitegen.analyses.occlusion.occlusion` and
:func:`~sitegen.analyses.occlusion.empirical_rf`; the conventions (un-normalized images, positions
inside the image) are in :mod:`sitegen.analyses.occlusion`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["DEFAULT_FILL", "occluded_batch", "occluder_grid"]

#: Grey of the un-normalized [0, 1] image space used to fill the occluder.
DEFAULT_FILL = 0.5


def occluder_grid(image_size: tuple[int, int], size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Top rows and left columns of the occluder positions: ``0, stride, … <= side - size`` per axis.

    Raises:
        ValueError: ``size`` does not fit the image or ``stride`` < 1.
    """
    rows, cols = image_size
    if not 1 <= size <= min(rows, cols):
        raise ValueError(f"occluder size must be in 1..{min(rows, cols)} for a {rows}x{cols} image, "
                         f"got {size}")
    if stride < 1:
        raise ValueError(f"occluder stride must be >= 1, got {stride}")
    return np.arange(0, rows - size + 1, stride), np.arange(0, cols - size + 1, stride)


def occluded_batch(input_size: int) -> int:
    """Occluded copies per forward pass at the memory of 256 copies of a 64 px image.

    256 copies of a 224 px image through alexnet hold about 1 GB of activations, which set the seed-
    scale build's peak RSS (issue 13): the batch shrinks with the image's area instead (21 at 224 px).
    """
    return max(4, round(256 * (64 / input_size) ** 2))


def _occlude(x: Tensor, img: Tensor, tops: Tensor, lefts: Tensor, size: int, fill: float) -> Tensor:
    """Copies ``x[img]`` with a ``size``-px square of ``fill`` at ``(tops, lefts)``: ``[n, 3, H, W]``.

    The squares are the outer product of a row mask ``[n, H]`` and a column mask ``[n, W]``.
    """
    h, w = x.shape[-2:]
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    row_in = (r >= tops[:, None]) & (r < tops[:, None] + size)
    col_in = (c >= lefts[:, None]) & (c < lefts[:, None] + size)
    mask = row_in[:, None, :, None] & col_in[:, None, None, :]
    return torch.where(mask, x.new_tensor(fill), x[img])
