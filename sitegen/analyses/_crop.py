"""Receptive-field crops: exact compute crops for reconstructions, and display crops for patches.

Compute crops (why and when they are exact)
-------------------------------------------
A unit's reconstruction is zero outside its receptive field, so it can be computed on a crop of the
input instead of the whole image (conv1 of alexnet sees 11 of 224 px). Along one axis, a chain of
convs and pools maps unit ``r`` of the target layer to input pixels
``[r * stride - pad, r * stride - pad + size)`` (:class:`Span`; ``pad`` is the cumulative padding).
Two crops keep the unit's value, its max-pool switches and ReLU masks bit-for-bit:

- **valid** (the field lies inside the image): crop exactly the field and run the network with
  conv/pool padding set to 0 on that axis. The field never touches padding, and the crop start is
  congruent with every intermediate layer's grid, so the unpadded network computes precisely the
  unit's dependency cone at every layer: the target map is 1 px and the work is the minimum.
- **aligned** (the field is clipped by the image border): crop from ``t`` = the field start clipped to
  the image and rounded down to a multiple of ``stride`` (so every intermediate grid stays aligned)
  to the field end clipped to the image (or further: any longer crop is exact too), keeping the
  padding: where the field leaves the image, the crop edge is the image edge and the padding is the
  same as in the full forward.

Both hold for chains of conv/pool/pointwise modules only; the caller checks that and otherwise runs
on the full image. Tests compare cropped with uncropped reconstructions for interior and border units.

Display crops
-------------
:func:`rf_patch` pastes the receptive-field box (clipped to the image) at its true offset into a
canvas the size of the unclipped box: a unit at the image border shows its image part where the
network saw it, and ``fill`` where the field hangs over the edge.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import nn

from sitegen.models.layers import ACTIVATIONS

__all__ = [
    "AxisCrop",
    "Span",
    "axis_crop",
    "cell_size",
    "chain_spans",
    "fit_cell",
    "paste_box",
    "rf_patch",
    "SPATIAL",
    "POINTWISE",
]

Box = tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive

#: Modules that move the sampling grid: their geometry enters :class:`Span`.
SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
#: Modules that act on each position alone (BatchNorm/Dropout only in eval mode): they keep crops exact.
POINTWISE = (
    *ACTIVATIONS,  # the layer table's activations (sitegen.models.layers: ReLU, GELU, Tanh, ...)
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Identity,
    nn.LocalResponseNorm,
    nn.BatchNorm2d,
    nn.Dropout,
    nn.Dropout2d,
    nn.AlphaDropout,
)


@dataclass(frozen=True, slots=True)
class Span:
    """One axis of a receptive field: unit ``r`` sees ``[r * stride - pad, r * stride - pad + size)``."""

    size: int
    stride: int
    pad: int

    def then(self, kernel: int, stride: int, pad: int) -> Span:
        """The span after one more conv/pool with this (dilated) kernel extent, stride and padding."""
        return Span(
            self.size + (kernel - 1) * self.stride, self.stride * stride, self.pad + pad * self.stride
        )


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def module_geometry(m: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """(kernel extent, stride, padding) per axis of a conv/pool, or None when a crop cannot be exact."""
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            return None
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        return ((d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1), _pair(m.stride), _pair(m.padding))
    if isinstance(m, nn.MaxPool2d):
        k, d = _pair(m.kernel_size), _pair(m.dilation)
        stride = _pair(m.stride if m.stride is not None else m.kernel_size)
        return ((d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1), stride, _pair(m.padding))
    if isinstance(m, nn.AvgPool2d):
        k = _pair(m.kernel_size)
        stride = _pair(m.stride if m.stride is not None else m.kernel_size)
        return (k, stride, _pair(m.padding))
    return None


def chain_spans(modules: Sequence[nn.Module]) -> tuple[Span, Span]:
    """Row and column spans of the output of a chain of conv/pool/pointwise ``modules``."""
    rows, cols = Span(1, 1, 0), Span(1, 1, 0)
    for m in modules:
        geometry = module_geometry(m)
        if geometry is None:
            continue
        k, s, p = geometry
        rows, cols = rows.then(k[0], s[0], p[0]), cols.then(k[1], s[1], p[1])
    return rows, cols


@dataclass(frozen=True, slots=True)
class AxisCrop:
    """The crop of one axis for one unit: input ``[start, start + length)``; the unit sits at ``index``."""

    start: int
    length: int
    index: int
    valid: bool


def axis_crop(span: Span, r: int, n: int, quantum: int = 1) -> AxisCrop:
    """Exact crop along one axis of length ``n`` for the unit at position ``r`` (see the module doc).

    ``quantum`` > 1 rounds the length of a clipped ("aligned") crop up to a multiple of ``quantum``
    counted from the image edge the crop touches, so that border units share a few crop shapes and
    batch together (a longer crop holds more real pixels and stays exact).
    """
    lo = r * span.stride - span.pad
    hi = lo + span.size
    if lo >= 0 and hi <= n:
        return AxisCrop(lo, span.size, 0, True)
    if lo < 0:  # touches the first pixel: [0, end)
        end = n if hi >= n else min(n, -(-hi // quantum) * quantum)
        return AxisCrop(0, end, r, False)
    # touches the last pixel: [start, n), start a multiple of the stride
    start = (lo // span.stride) * span.stride
    length = min(n, -(-(n - start) // quantum) * quantum)
    start = ((n - length) // span.stride) * span.stride
    return AxisCrop(start, n - start, r - start // span.stride, False)


# --- display ----------------------------------------------------------------------------------------


def cell_size(rf_size: int, max_cell: int = 96) -> int:
    """Side of a sprite tile: the receptive field's side, downscaled to at most ``max_cell`` px."""
    return max(1, min(int(rf_size), int(max_cell)))


def rf_patch(image: np.ndarray, box: Box, fill: int | Sequence[int] = 128) -> np.ndarray:
    """The image under an (unclipped) receptive-field box, at its true offset in a box-sized canvas.

    Args:
        image: uint8 ``[H, W, 3]``.
        box: ``(top, left, bottom, right)`` in image pixels, possibly reaching past the image.
        fill: colour of the canvas where the box leaves the image (default neutral grey; the build
            may pass the dataset mean colour, which is what the network's zero padding looks like).

    Returns:
        uint8 ``[bottom - top, right - left, 3]``.
    """
    top, left, bottom, right = (int(v) for v in box)
    canvas = np.empty((bottom - top, right - left, 3), dtype=np.uint8)
    canvas[...] = np.asarray(fill, dtype=np.uint8)
    paste_box(canvas, image, box)
    return canvas


def paste_box(canvas: np.ndarray, source: np.ndarray, box: Box) -> None:
    """Copy ``source[box ∩ source]`` into ``canvas`` (box-sized) at the box's true offset, in place."""
    top, left, bottom, right = (int(v) for v in box)
    h, w = source.shape[:2]
    t, lft, b, r = max(top, 0), max(left, 0), min(bottom, h), min(right, w)
    if t < b and lft < r:
        canvas[t - top : b - top, lft - left : r - left] = source[t:b, lft:r]


def fit_cell(tile: np.ndarray, cell: int) -> np.ndarray:
    """Resize a uint8 ``[h, w, 3]`` tile to ``[cell, cell, 3]`` (area filter: thin sketch lines survive)."""
    if tile.shape[0] == cell and tile.shape[1] == cell:
        return tile
    resample = Image.Resampling.BOX if tile.shape[0] >= cell else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(tile).resize((cell, cell), resample))


def grid_shape(count: int, cols: int | None = None) -> tuple[int, int]:
    """(cols, rows) of a near-square grid holding ``count`` tiles."""
    cols = cols or max(1, math.ceil(math.sqrt(count)))
    return cols, max(1, math.ceil(count / cols))
