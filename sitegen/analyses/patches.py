"""Receptive-field patches of each unit's top-k images, and the sprites that lay tiles out.

A unit's rank-r patch is the part of its rank-r image that the unit sees: the receptive-field box
centred on the unit's maximum (Zeiler & Fergus 2013, figure 2). The box is taken from the layer's
receptive field (:func:`sitegen.receptive_field.unit_box`), pasted at its true offset into a canvas
of the box's full size, so a unit at the image border shows the image where the network saw it and
``fill`` where the field hangs over the edge (:func:`sitegen.analyses._crop.rf_patch`), then
downscaled (area filter) to a tile of at most ``max_cell`` px. Reconstructions
(:func:`sitegen.analyses.reconstruct.reconstruct_topk`) use the same box and tile size, so a sprite's
panels line up tile for tile.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sitegen.analyses import _crop
from sitegen.models.types import LayerInfo
from sitegen.receptive_field import RF, clip_box, unit_box

__all__ = ["UnitPatches", "extract_patches", "sprite"]

#: ``boxes`` entry of an empty top-k slot (``images == -1``).
EMPTY_BOX = (-1, -1, -1, -1)


@dataclass(frozen=True, slots=True)
class UnitPatches:
    """Every unit's top-k receptive-field patches.

    Attributes:
        cells: uint8 ``[U, k, cell, cell, 3]``; entry ``[u, r]`` is unit ``u``'s rank ``r + 1`` patch
            (``fill`` for empty slots).
        boxes: int32 ``[U, k, 4]``: the receptive-field box ``(top, left, bottom, right)`` clipped to
            the image (the pixels the patch shows), ``-1`` for empty slots.
    """

    cells: np.ndarray
    boxes: np.ndarray


def extract_patches(
    images_by_index: Callable[[int], np.ndarray],
    layer: LayerInfo,
    topk: Any,
    image_size: int | tuple[int, int],
    *,
    max_cell: int = 96,
    fill: int | Sequence[int] = 128,
    units: Sequence[int] | None = None,
) -> UnitPatches:
    """Crop the top-k receptive-field patches of ``units`` (default: every unit).

    Boxes are computed for every unit (cheap arithmetic, kept in the store for diffs and unit
    pages); cells only for ``units`` — those with pages. VGG-19's fc6 alone would otherwise hold
    4096 x 9 cells (about 1 GB at 96 px) that no page shows.

    Args:
        images_by_index: probe index -> uint8 ``[H, W, 3]`` image (each is loaded once here).
        layer: the layer (its receptive field gives the boxes; linear and prob units see the whole image).
        topk: the layer's mined top-k table (duck-typed :class:`~sitegen.mine.LayerTopK`: ``images``,
            ``rows``, ``cols`` ``[U, k]``, image ``-1`` = empty).
        image_size: image side in pixels, or ``(rows, cols)`` (boxes are computed without loading images).
        max_cell: largest tile side; the tile is the receptive field's side when smaller.
        fill: colour outside the image (default neutral grey; the dataset mean colour shows what the
            network's first-layer zero padding looked like).

    Returns:
        The patches and their clipped boxes.

    Example:
        >>> p = extract_patches(lambda i: images[i], info, mined.layers["conv2"], 224)
        >>> p.cells.shape  # 192 units, top-9, 51 px receptive field
        (192, 9, 51, 51, 3)
    """
    img_idx = np.asarray(topk.images)
    rows, cols = np.asarray(topk.rows), np.asarray(topk.cols)
    n_units, k = img_idx.shape
    chosen = list(range(n_units)) if units is None else [int(u) for u in units]
    spatial = layer.kind not in ("linear", "prob")
    rows_cols = (image_size, image_size) if isinstance(image_size, int) else image_size
    shape = (int(rows_cols[0]), int(rows_cols[1]))
    side = int(layer.rf_size) if spatial else max(shape)
    cell = _crop.cell_size(side, max_cell)
    full = (0, 0, shape[0], shape[1])
    unclipped = np.empty((n_units, k, 4), dtype=np.int64)
    boxes = np.empty((n_units, k, 4), dtype=np.int32)
    boxes[...] = EMPTY_BOX
    for u, r in zip(*np.nonzero(img_idx >= 0), strict=True):
        box = _box(layer, int(rows[u, r]), int(cols[u, r]), shape) if spatial else full
        unclipped[u, r] = box
        boxes[u, r] = _clip(box, shape)
    cells = np.empty((len(chosen), k, cell, cell, 3), dtype=np.uint8)
    cells[...] = np.asarray(fill, dtype=np.uint8)
    by_image: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    for j, u in enumerate(chosen):
        for r in np.flatnonzero(img_idx[u] >= 0):
            by_image[int(img_idx[u, r])].append((j, u, int(r)))
    for index in sorted(by_image):  # one load per image, whatever its number of entries
        image = np.asarray(images_by_index(index))
        for j, u, r in by_image[index]:
            t, lf, b, rt = (int(v) for v in unclipped[u, r])
            box = (t, lf, b, rt)
            cells[j, r] = _crop.fit_cell(_crop.rf_patch(image, box, fill), cell)
    return UnitPatches(cells=cells, boxes=boxes)


def sprite(panels: Sequence[np.ndarray], cols: int, *, fill: int = 255) -> np.ndarray:
    """Lay out panels of tiles side by side, each a ``cols`` x ``rows`` grid, rank 1 top-left, row-major.

    This is the unit sprite of the store (docs/INTERNALS.md): panel ``p`` (patches, then one per
    reconstruction method) occupies columns ``[p * cols * cell, (p + 1) * cols * cell)``; tile ``r``
    of a panel sits at grid row ``r // cols``, column ``r % cols``.

    Args:
        panels: uint8 ``[k, cell, cell, 3]`` each, all the same shape.
        cols: tiles per grid row.
        fill: colour of grid slots past ``k``.

    Returns:
        uint8 ``[rows * cell, len(panels) * cols * cell, 3]`` with ``rows = ceil(k / cols)``.
    """
    if not panels:
        raise ValueError("sprite needs at least one panel")
    k, cell = panels[0].shape[0], panels[0].shape[1]
    for panel in panels:
        if panel.shape != panels[0].shape:
            raise ValueError(f"panels differ in shape: {panel.shape} vs {panels[0].shape}")
    n_rows = max(1, -(-k // cols))
    out = np.full((n_rows * cell, len(panels) * cols * cell, 3), fill, dtype=np.uint8)
    for p, panel in enumerate(panels):
        for r in range(k):
            top, left = (r // cols) * cell, (p * cols + r % cols) * cell
            out[top : top + cell, left : left + cell] = panel[r]
    return out


def _box(layer: LayerInfo, row: int, col: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    return unit_box(RF(layer.rf_size, layer.rf_stride, layer.rf_offset), row, col)


def _clip(box: tuple[int, int, int, int], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    return clip_box(box, (int(shape[0]), int(shape[1])))
