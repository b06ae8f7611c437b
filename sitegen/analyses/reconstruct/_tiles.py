"""Reconstructions as sprite tiles: the contrast stretch, the resize to a cell, the display box.

:func:`to_display` maps a reconstruction to uint8 around mid-grey (:func:`display_peak`: a robust
scale), :func:`display_cell` shrinks it to a patch cell first; the ``_tile_*`` emit callbacks cut
each computed crop to its patch's receptive-field box and draw it into an array or a
:class:`TileFile` (tiles on disk for wide layers).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from sitegen.models import LayerInfo
from sitegen.receptive_field import RF, unit_box


def to_display(rec: np.ndarray, peak: float | None = None, *, grayscale: bool = False) -> np.ndarray:
    """A reconstruction ``[C, h, w]`` as uint8 ``[h, w, 3]``, contrast-stretched around grey.

    Zero (no contribution, and everything outside the receptive field) is mid-grey; positive and
    negative signal brighten and darken each colour channel, scaled symmetrically by ``peak``:
    ``x / (2 * peak) + 0.5``, clipped. The default ``peak`` is robust (:func:`display_peak`: the
    99.5th percentile of the non-zero magnitudes), so the brightest 0.5 % of pixels saturate instead
    of one extreme pixel squeezing the rest into flat grey (issue 14: reconstructions read as grey
    noise, values 93-169, on a projector; DeepVis and Zeiler & Fergus's figures stretch likewise).

    ``grayscale``: the input was grey (R = G = B), so the reconstruction is shown as one grey channel,
    the sum over the colour channels: the gradient with respect to a grey image. Its channels apart
    are differences the network never saw, and show as false colour.
    """
    if grayscale and rec.shape[0] > 1:
        rec = rec.sum(axis=0, keepdims=True)
    if peak is None:
        peak = display_peak(rec)
    scaled = rec / (2 * peak) + 0.5 if peak > 0 else np.full_like(rec, 0.5)
    out = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out.copy()


class TileFile:
    """uint8 tiles ``[U, k, cell, cell, 3]`` in an anonymous temporary file instead of RAM.

    Written tile by tile (``out[j, r] = tile``, one pwrite), read back unit by unit (``out[j]``):
    the build turns each unit into its sprite and moves on, so RAM stays flat however wide the
    layer (issue 13: peak RSS flat in the probe set and the layer width). Unwritten tiles read
    back mid-grey, as empty slots of the array form.
    """

    def __init__(self, shape: tuple[int, int, int, int, int]) -> None:
        self.shape = shape
        self._tile = shape[2] * shape[3] * shape[4]
        self._file = tempfile.TemporaryFile(prefix="sitegen-tiles-")
        self._written = np.zeros(shape[:2], dtype=bool)

    def __setitem__(self, key: tuple[int, int], tile: np.ndarray) -> None:
        j, r = (int(v) for v in key)
        data = np.ascontiguousarray(tile, dtype=np.uint8)
        os.pwrite(self._file.fileno(), data.tobytes(), (j * self.shape[1] + r) * self._tile)
        self._written[j, r] = True

    def __getitem__(self, j: int) -> np.ndarray:
        k = self.shape[1]
        raw = os.pread(self._file.fileno(), k * self._tile, int(j) * k * self._tile)
        out = np.frombuffer(raw.ljust(k * self._tile, b"\x80"), dtype=np.uint8).reshape(self.shape[1:]).copy()
        out[~self._written[j]] = 128
        return out

    def __len__(self) -> int:
        return self.shape[0]


#: Share of a reconstruction's non-zero magnitudes kept below saturation by :func:`to_display`.
DISPLAY_PERCENTILE = 99.5


def display_peak(rec: np.ndarray) -> float:
    """The magnitude :func:`to_display` maps to black/white: a high percentile of the non-zero ``|x|``.

    Non-zero only: a receptive-field crop is zero outside the field, and a sparse reconstruction is
    zero almost everywhere; those zeros would pull a plain percentile down to nothing.
    """
    mags = np.abs(rec[rec != 0])
    return float(np.percentile(mags, DISPLAY_PERCENTILE)) if mags.size else 0.0


def display_cell(rec: Tensor | np.ndarray, cell: int, *, grayscale: bool = False) -> np.ndarray:
    """A reconstruction ``[C, h, w]`` shrunk to its ``cell`` (area average), then :func:`to_display`.

    The stretch is computed on the pixels shown, after the resize (a 224 px whole-image
    reconstruction is shown in a 96 px cell). Pillow's float BOX filter does the resize: 0.1 ms a
    channel where torch's adaptive pooling of one small tensor took 3.5 ms (thread start-up).
    """
    x = rec.detach().float().cpu().numpy() if isinstance(rec, Tensor) else np.asarray(rec, np.float32)
    if grayscale and x.shape[0] > 1:
        x = x.sum(axis=0, keepdims=True)
    if tuple(x.shape[-2:]) != (cell, cell):
        box = Image.Resampling.BOX if min(x.shape[-2:]) >= cell else Image.Resampling.NEAREST
        x = np.stack([np.asarray(Image.fromarray(c, mode="F").resize((cell, cell), box)) for c in x])
    return to_display(x)


def _display_size(layer: LayerInfo, image_size: int) -> int:
    return image_size if layer.kind in ("linear", "prob") else int(layer.rf_size)


def _display_box(layer: LayerInfo, row: int, col: int) -> tuple[int, int, int, int]:
    """The patch's box: the layer table's receptive field around (row, col), unclipped."""
    return unit_box(RF(layer.rf_size, layer.rf_stride, layer.rf_offset), row, col)


def _tile_into(
    out: Any,
    entries: Sequence[tuple[int, int]],
    boxes: Sequence[tuple[int, int, int, int]],
    cell: int,
    grayscale: bool,
    idx: Tensor,
    grads: Tensor,
    tops: Sequence[int],
    lefts: Sequence[int],
) -> None:
    """Emit callback of :func:`reconstruct_topk`: pair ``e`` is entry ``(j, r)``, drawn into ``out[j, r]``."""
    arr = grads.detach().float().cpu().numpy()
    for q, e in enumerate(idx.tolist()):
        j, r = entries[e]
        shown = _display_box_of(arr[q], tops[q], lefts[q], boxes[e])
        out[j, r] = display_cell(shown, cell, grayscale=grayscale)


def _tile_whole(
    out: Any,
    js: np.ndarray,
    rs: np.ndarray,
    cell: int,
    size: int,
    grayscale: bool,
    idx: Tensor,
    grads: Tensor,
    tops: Sequence[int],
    lefts: Sequence[int],
) -> None:
    """Emit callback for whole-image pairs: pair ``e`` is drawn into ``out[js[e], rs[e]]``."""
    if tuple(grads.shape[-2:]) != (size, size):  # images of another size: cut to the display box
        entries = list(zip(js.tolist(), rs.tolist(), strict=True))
        box = [(0, 0, size, size)] * len(entries)
        _tile_into(out, entries, box, cell, grayscale, idx, grads, tops, lefts)
        return
    arr = grads.detach().float().cpu().numpy()
    for q, e in enumerate(idx.tolist()):
        out[js[e], rs[e]] = display_cell(arr[q], cell, grayscale=grayscale)


def _display_box_of(rec: np.ndarray, top: int, left: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Cut the (display) box out of a reconstruction crop placed at (top, left); zero outside."""
    bt, bl, bb, br = box
    h, w = rec.shape[1:]
    if (top, left, top + h, left + w) == box:
        return rec
    canvas = np.zeros((rec.shape[0], bb - bt, br - bl), dtype=np.float32)
    t, lft, b, r = max(bt, top), max(bl, left), min(bb, top + h), min(br, left + w)
    if t < b and lft < r:
        canvas[:, t - bt : b - bt, lft - bl : r - bl] = rec[:, t - top : b - top, lft - left : r - left]
    return canvas
