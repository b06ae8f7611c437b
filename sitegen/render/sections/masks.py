"""Unit pages: the unit's activation outline on each top-k image and patch (``masks.json`` + npz).

The outline is drawn, not stored: :mod:`sitegen.render._outline` turns the stored map and threshold
into one SVG path in image pixels. The full image shows it with ``viewBox="0 0 S S"``; the patch tile
shows the same path through ``viewBox="left top size size"``, the patch's unclipped receptive-field box
(:func:`patch_view_box`), so a map position lands on the patch exactly where it lies in the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sitegen.render._outline import centres, contour, svg_path
from sitegen.render.sections import Files, UnitPage
from sitegen.store.formats import MasksDoc

__all__ = ["TEMPLATE", "TITLE", "Outline", "UnitView", "patch_view_box", "unit"]

TITLE = "Activation outlines"
TEMPLATE = "_masks.html"


@dataclass(frozen=True, slots=True)
class Outline:
    """One rank: its probe image, the outline's path (image px) and the patch's viewBox."""

    image: int
    d: str  # "" when the map never exceeds the threshold on this image
    patch: str


@dataclass(frozen=True, slots=True)
class UnitView:
    view_box: str  # the full image: "0 0 S S"
    outlines: dict[int, Outline]  # by rank (1 = the top image)
    threshold: str
    quantile: str  # "99.5th"
    grid: str  # "13×13"
    sample: int
    probe: int
    empty: int  # ranks whose map never exceeds the threshold


def patch_view_box(box: np.ndarray | list[int]) -> str:
    """The viewBox that shows an image-pixel drawing inside the patch of ``(top, left, bottom, right)``."""
    top, left, bottom, right = (int(v) for v in box)
    return f"{left} {top} {right - left} {bottom - top}"


def _ordinal(q: float) -> str:
    pct = f"{q * 100:.2f}".rstrip("0").rstrip(".")
    if pct.endswith(("11", "12", "13")) or pct[-1] not in "123":
        return pct + "th"
    return pct + {"1": "st", "2": "nd", "3": "rd"}[pct[-1]]


def unit(doc: MasksDoc, page: UnitPage, files: Files) -> UnitView | None:
    info = doc.layers.get(page.layer)
    if info is None or page.unit not in info.units:
        return None
    s = info.units.index(page.unit)
    arrays = files.arrays(doc.file)
    maps = arrays[f"{page.layer}/maps"][s]
    images = arrays[f"{page.layer}/images"][s]
    boxes = arrays[f"{page.layer}/boxes"][s]
    level = float(arrays[f"{page.layer}/threshold"][s])
    rows, cols = info.grid
    if maps.shape[1:] != (rows, cols) or len(images) != len(maps) or len(boxes) != len(maps):
        raise ValueError(f"{page.layer}: arrays of unit {page.unit} do not match the grid {rows}x{cols}")
    ys = centres(rows, info.rf_stride, info.rf_offset)
    xs = centres(cols, info.rf_stride, info.rf_offset)
    size = (float(doc.input_size), float(doc.input_size))
    outlines = {}
    for r, (m, idx, box) in enumerate(zip(maps, images, boxes, strict=True)):
        if idx < 0:
            continue
        d = svg_path(contour(m.astype(np.float32), level, ys, xs, size))
        outlines[r + 1] = Outline(int(idx), d, patch_view_box(box))
    return UnitView(
        view_box=f"0 0 {doc.input_size} {doc.input_size}",
        outlines=outlines,
        threshold=f"{level:.3g}",
        quantile=_ordinal(doc.quantile),
        grid=f"{rows}×{cols}",
        sample=doc.sample,
        probe=doc.probe,
        empty=sum(1 for o in outlines.values() if not o.d),
    )
