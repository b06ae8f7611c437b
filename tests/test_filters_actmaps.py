"""Filter grids and activation maps."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torchvision
from torch import nn

from sitegen.analyses.activation_maps import activation_maps, viridis
from sitegen.analyses.filters import filter_grid
from sitegen.models.types import LayerInfo, LoadedModel
from sitegen.receptive_field import receptive_fields

U32 = float(np.finfo(np.float32).eps) / 2  # float32 unit roundoff, 2**-24


def f32_tol(scale: float, *reductions: int) -> float:
    """How far a float32 result may sit from its float64 value (issue 11).

    Per layer, a sum of n products errs by about sqrt(n) units of roundoff of the values' scale
    (Higham & Mary 2019, probabilistic bound); 8x that for headroom. It follows the values and the
    reductions, not one torch build's rounding; a wrong channel, class or image is off by far more.
    """
    return 8 * sum(math.sqrt(n) for n in reductions) * U32 * scale


def test_filter_grid_alexnet() -> None:
    torch.manual_seed(0)
    grid = filter_grid(torchvision.models.alexnet(weights=None))
    assert grid is not None
    # 64 filters of 11x11, enlarged 2x (>= 16 px) with a 1 px frame: 8 x 8 tiles of 24 px
    assert (grid.cols, grid.rows, grid.cell, grid.count, grid.layer) == (8, 8, 24, 64, "features.0")
    assert grid.image.shape == (192, 192, 3) and grid.image.dtype == np.uint8
    assert grid.layout() == {"cols": 8, "rows": 8, "cell": 24, "count": 64, "layer": "features.0", "pad": 1}
    # per-filter min-max: every filter reaches 0 and 255; frames are white
    for i in range(grid.count):
        top, left = (i // 8) * 24, (i % 8) * 24
        tile = grid.image[top + 1 : top + 23, left + 1 : left + 23]
        assert tile.min() == 0 and tile.max() == 255
        assert (grid.image[top, left : left + 24] == 255).all()


def test_filter_grid_nearest_upscale_of_a_known_filter() -> None:
    conv = nn.Conv2d(3, 2, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 2] = 1.0  # one red pixel
        conv.weight[1, :, 0, 0] = -1.0  # one black pixel on white
        conv.weight[1, :, 1:, :] = 1.0
        conv.weight[1, :, 0, 1:] = 1.0
    grid = filter_grid(nn.Sequential(conv), pad=0)
    assert grid is not None and grid.cell == 18  # 3 px x 6 = 18 >= 16
    tile0 = grid.image[:18, :18]
    assert (tile0[6:12, 12:18] == (255, 0, 0)).all() and (tile0[:6] == 0).all()
    tile1 = grid.image[:18, 18:36]
    assert (tile1[:6, :6] == 0).all() and (tile1[6:] == 255).all()


def test_filter_grid_none_without_conv() -> None:
    assert filter_grid(nn.Sequential(nn.Linear(3, 2))) is None


def test_viridis_ends() -> None:
    out = viridis(np.array([0.0, 1.0, 0.5]))
    assert out.shape == (3, 3) and out.dtype == np.uint8
    assert (
        tuple(out[0]) == (68, 1, 84) and tuple(out[1]) == (253, 231, 37) and tuple(out[2]) == (33, 145, 140)
    )


def _loaded(size: int) -> LoadedModel:
    torch.manual_seed(0)
    features = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 5, 3), nn.ReLU()
    )
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 7)).eval()
    rf = receptive_fields(model, size)
    layers = (
        LayerInfo(
            "conv1", "0.1", "conv", (6, size, size), 6, rf["0.1"].size, rf["0.1"].stride, rf["0.1"].offset
        ),
        LayerInfo("conv2", "0.4", "conv", (5, 0, 0), 5, rf["0.4"].size, rf["0.4"].stride, rf["0.4"].offset),
        LayerInfo("fc", "3", "linear", (7,), 7, size, size, (size - 1) / 2),
    )
    return LoadedModel(model, "tiny", 7, size, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), layers, 0)


def test_activation_maps_shapes_and_predictions() -> None:
    loaded = _loaded(20)
    probe = torch.rand(4, 3, 20, 20, generator=torch.Generator().manual_seed(1))
    maps = activation_maps(loaded, lambda i: probe[i], [3, 1], channels=4, labels=[2, 5], batch_size=1)
    assert [m.index for m in maps.images] == [3, 1] and [m.label for m in maps.images] == [2, 5]
    # activation_maps runs float32 one image at a time: checked against the float64 truth
    with torch.no_grad():
        logits = copy.deepcopy(loaded.module).double()(loaded.normalize(probe[[3, 1]]).double())
    probs = torch.softmax(logits, dim=1)
    # conv1 3*3*3, conv2 6*3*3, the 8x8 average, the linear; |d prob| <= 2 max |d logit|
    p_tol = 2 * f32_tol(float(logits.abs().max()), 27, 54, 64, 5)
    for b, item in enumerate(maps.images):
        assert [lm.layer for lm in item.layers] == ["conv1", "conv2"]  # conv layers only
        classes = [c for c, _ in item.top5]
        top = probs[b].topk(6).values
        assert (top[:-1] - top[1:] > 10 * p_tol).all()  # the order is well defined at this tolerance
        assert classes == probs[b].topk(5).indices.tolist()
        np.testing.assert_allclose([p for _, p in item.top5], top[:5].numpy(), rtol=0, atol=p_tol)
        for lm in item.layers:
            assert len(lm.channels) == 4
            norms = [c.norm for c in lm.channels]
            assert norms == sorted(norms, reverse=True)
            for ch in lm.channels:
                assert ch.overlay.shape == (20, 20, 3) and ch.overlay.dtype == np.uint8


def test_activation_maps_norms_match_the_layer() -> None:
    loaded = _loaded(16)
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    maps = activation_maps(loaded, lambda i: image, [0], channels=2)
    features = loaded.module.get_submodule("0")
    assert isinstance(features, nn.Sequential)
    with torch.no_grad():  # the float64 truth; activation_maps computes in float32
        act = copy.deepcopy(features[:2]).double()(loaded.normalize(image[None]).double())[0]
    norms = act.flatten(1).norm(dim=1)
    top = norms.topk(2)
    conv1 = maps.images[0].layers[0]
    assert [c.channel for c in conv1.channels] == top.indices.tolist()
    tol = f32_tol(float(top.values.max()), 27, 16 * 16)  # a 3*3*3 conv, then a norm over 16x16
    np.testing.assert_allclose([c.norm for c in conv1.channels], top.values.numpy(), rtol=0, atol=tol)
