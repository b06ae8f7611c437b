"""Receptive-field patches, display crops and sprites."""

from __future__ import annotations

import numpy as np
import pytest

from sitegen.analyses import _crop
from sitegen.analyses.patches import EMPTY_BOX, extract_patches, sprite
from sitegen.models.types import LayerInfo


def _image(h: int, w: int) -> np.ndarray:
    """Non-square uint8 image whose pixels encode their position: R = row, G = col, B = 7."""
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.arange(h)[:, None]
    img[..., 1] = np.arange(w)[None, :]
    img[..., 2] = 7
    return img


def test_rf_patch_at_the_border_keeps_the_true_offset() -> None:
    img = _image(20, 30)
    patch = _crop.rf_patch(img, (-3, 25, 8, 36), fill=128)  # hangs over the top and the right edge
    assert patch.shape == (11, 11, 3)
    # image rows 0..7, cols 25..29 land at canvas rows 3..10, cols 0..4
    np.testing.assert_array_equal(patch[3:, :5], img[0:8, 25:30])
    assert (patch[:3] == 128).all() and (patch[:, 5:] == 128).all()


def test_rf_patch_inside_is_a_plain_crop() -> None:
    img = _image(20, 30)
    np.testing.assert_array_equal(_crop.rf_patch(img, (2, 4, 13, 15)), img[2:13, 4:15])


def test_axis_crop_modes() -> None:
    span = _crop.Span(size=11, stride=4, pad=2)  # alexnet conv1
    assert _crop.axis_crop(span, 5, 224) == _crop.AxisCrop(18, 11, 0, True)
    assert _crop.axis_crop(span, 0, 224) == _crop.AxisCrop(0, 9, 0, False)
    last = _crop.axis_crop(span, 55, 224)  # field [218, 229): crop from a multiple of 4 to the end
    assert last == _crop.AxisCrop(216, 8, 1, False)
    # a quantum lengthens border crops towards a shared length; they stay aligned
    assert _crop.axis_crop(span, 0, 224, quantum=12) == _crop.AxisCrop(0, 12, 0, False)
    q = _crop.axis_crop(span, 55, 224, quantum=12)
    assert q.start % 4 == 0 and q.start + q.length == 224 and q.length >= 12 and q.index == 55 - q.start // 4


def _layer(kind: str = "conv") -> LayerInfo:
    # a conv layer with RF 11, stride 4, offset 3 (alexnet conv1)
    return LayerInfo("conv1", "features.1", kind, (4, 6, 8), 4, 11, 4, 3.0)


class _TopK:
    def __init__(self, images: list[list[int]], rows: list[list[int]], cols: list[list[int]]) -> None:
        self.images = np.array(images, dtype=np.int64)
        self.rows = np.array(rows, dtype=np.int32)
        self.cols = np.array(cols, dtype=np.int32)
        self.values = np.zeros(self.images.shape, dtype=np.float32)


def test_extract_patches_boxes_cells_and_empty_slots() -> None:
    images = {0: _image(26, 34), 1: _image(26, 34) // 2}
    loads: list[int] = []

    def by_index(i: int) -> np.ndarray:
        loads.append(i)
        return images[i]

    topk = _TopK([[0, 1], [1, -1]], [[0, 2], [5, -1]], [[0, 3], [7, -1]])
    p = extract_patches(by_index, _layer(), topk, (26, 34), max_cell=96, fill=128)
    assert p.cells.shape == (2, 2, 11, 11, 3) and p.cells.dtype == np.uint8
    assert sorted(loads) == [0, 1], "each image is loaded once"
    # unit 0, rank 1: unit (0, 0) sees [-2, 9) x [-2, 9): clipped box, true offset, fill elsewhere
    assert tuple(p.boxes[0, 0]) == (0, 0, 9, 9)
    np.testing.assert_array_equal(p.cells[0, 0, 2:, 2:], images[0][:9, :9])
    assert (p.cells[0, 0, :2] == 128).all() and (p.cells[0, 0, :, :2] == 128).all()
    # unit 1, rank 1: (5, 7) sees rows [18, 29) (clipped at 26) and cols [26, 37) (clipped at 34)
    assert tuple(p.boxes[1, 0]) == (18, 26, 26, 34)
    np.testing.assert_array_equal(p.cells[1, 0, :8, :8], images[1][18:26, 26:34])
    # the empty slot
    assert tuple(p.boxes[1, 1]) == EMPTY_BOX and (p.cells[1, 1] == 128).all()


def test_extract_patches_downscales_to_max_cell() -> None:
    layer = LayerInfo("conv5", "features.11", "conv", (4, 13, 13), 4, 163, 16, 15.0)
    p = extract_patches(lambda i: _image(224, 224), layer, _TopK([[0]], [[6]], [[6]]), 224, max_cell=96)
    assert p.cells.shape == (1, 1, 96, 96, 3)


def test_extract_patches_linear_layer_shows_whole_image() -> None:
    layer = LayerInfo("fc6", "classifier.2", "linear", (10,), 10, 40, 40, 19.5)
    p = extract_patches(lambda i: _image(40, 40), layer, _TopK([[0]], [[0]], [[0]]), 40, max_cell=96)
    assert p.cells.shape == (1, 1, 40, 40, 3)
    assert tuple(p.boxes[0, 0]) == (0, 0, 40, 40)
    np.testing.assert_array_equal(p.cells[0, 0], _image(40, 40))


def test_sprite_layout_rank1_top_left_row_major_panels_side_by_side() -> None:
    k, cell, cols = 5, 4, 3
    panels = [
        np.stack([np.full((cell, cell, 3), 10 * p + r, dtype=np.uint8) for r in range(k)]) for p in range(2)
    ]
    out = sprite(panels, cols)
    assert out.shape == (2 * cell, 2 * cols * cell, 3)
    for p in range(2):
        for r in range(k):
            top, left = (r // cols) * cell, (p * cols + r % cols) * cell
            assert (out[top : top + cell, left : left + cell] == 10 * p + r).all()
    # slot 6 of each panel (past k) is blank
    assert (out[cell:, 2 * cell : 3 * cell] == 255).all()


def test_sprite_rejects_mismatched_panels() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        sprite([np.zeros((9, 4, 4, 3), np.uint8), np.zeros((9, 5, 5, 3), np.uint8)], 3)


def test_cells_only_for_chosen_units_boxes_for_all() -> None:
    loads: list[int] = []

    def by_index(i: int) -> np.ndarray:
        loads.append(i)
        return _image(26, 34)

    topk = _TopK([[0, 1], [2, 3]], [[0, 2], [5, 1]], [[0, 3], [7, 2]])
    every = extract_patches(lambda i: _image(26, 34), _layer(), topk, (26, 34))
    some = extract_patches(by_index, _layer(), topk, (26, 34), units=[1])
    assert some.cells.shape[0] == 1 and sorted(loads) == [2, 3], "only unit 1's images are loaded"
    np.testing.assert_array_equal(some.cells[0], every.cells[1])
    np.testing.assert_array_equal(some.boxes, every.boxes)
