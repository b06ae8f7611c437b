"""The first conv layer's filters as one RGB image (Zeiler & Fergus 2013, figure 2 layer 1; Krizhevsky 2012).

Each filter is scaled on its own, min-max over its three colour channels together (so its colour
balance is kept and every filter uses the full range, however small its weights), then enlarged with
nearest-neighbour sampling so that every filter is at least ``min_px`` pixels wide (an 11x11 alexnet
filter becomes 22x22; a 3x3 VGG filter 18x18), and framed by ``pad`` pixels of ``fill``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["FilterGrid", "filter_grid"]


@dataclass(frozen=True, slots=True)
class FilterGrid:
    """A grid of filters: filter ``i`` occupies tile row ``i // cols``, column ``i % cols``.

    Attributes:
        image: uint8 ``[rows * cell, cols * cell, 3]``.
        cols: tiles per row.
        rows: tile rows.
        cell: tile side in pixels: the enlarged filter plus ``pad`` on each side.
        count: number of filters (tiles past it are ``fill``).
        layer: ``named_modules()`` path of the conv layer drawn.
        pad: frame width inside each tile.
    """

    image: np.ndarray
    cols: int
    rows: int
    cell: int
    count: int
    layer: str
    pad: int

    def layout(self) -> dict[str, Any]:
        """The layout fields as a plain dict (for ``filters.json``)."""
        d = asdict(self)
        del d["image"]
        return d


def filter_grid(
    module: nn.Module,
    *,
    min_px: int = 16,
    pad: int = 1,
    cols: int | None = None,
    fill: int = 255,
    grayscale: bool = False,
) -> FilterGrid | None:
    """Draw the first ``nn.Conv2d`` (in module order) with 1 or 3 input channels as a grid.

    Args:
        module: the network.
        min_px: smallest side of an enlarged filter.
        pad: frame around each filter, in pixels.
        cols: tiles per row (default: a near-square grid).
        fill: frame colour.
        grayscale: the data is grey (R = G = B): draw each filter summed over its input channels,
            in grey. That sum is what the filter computes on a grey image; its colour channels
            apart are differences the network never sees, and show as false-colour noise (issue 14).

    Returns:
        The grid, or None when the network has no such conv layer (nothing to draw).

    Example:
        >>> grid = filter_grid(torchvision.models.alexnet())
        >>> grid.image.shape, grid.cell  # 64 filters of 11x11, enlarged 2x, 1 px frames
        ((192, 192, 3), 24)
    """
    found = next(
        ((p, m) for p, m in module.named_modules() if isinstance(m, nn.Conv2d) and m.in_channels in (1, 3)),
        None,
    )
    if found is None:
        return None
    path, conv = found
    with torch.no_grad():
        w = conv.weight.detach().float().cpu().numpy()  # [C_out, C_in / groups, kh, kw]
    if w.shape[1] == 1:
        w = np.repeat(w, 3, axis=1)
    if w.shape[1] != 3:
        return None
    if grayscale:
        w = np.repeat(w.sum(axis=1, keepdims=True), 3, axis=1)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    hi = w.max(axis=(1, 2, 3), keepdims=True)
    scaled = (w - lo) / np.where(hi > lo, hi - lo, 1.0)
    tiles = np.rint(scaled * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # [C, kh, kw, 3]
    count, kh, kw = tiles.shape[:3]
    scale = max(1, math.ceil(min_px / min(kh, kw)))
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    cell = max(kh, kw) * scale + 2 * pad
    n_cols = cols or math.ceil(math.sqrt(count))
    n_rows = math.ceil(count / n_cols)
    image = np.full((n_rows * cell, n_cols * cell, 3), fill, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        top, left = (i // n_cols) * cell + pad, (i % n_cols) * cell + pad
        image[top : top + tile.shape[0], left : left + tile.shape[1]] = tile
    return FilterGrid(image=image, cols=n_cols, rows=n_rows, cell=cell, count=count, layer=path, pad=pad)
