"""Invariance curves (Zeiler & Fergus 2013, Fig. 5) on toy nets whose invariances are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sitegen.analyses.invariance import border_fill, invariance, transform
from sitegen.errors import ModelError
from sitegen.models.types import LayerInfo, LoadedModel

SIZE = 24
SHIFTS = [-6.0, -3.0, 0.0, 3.0, 6.0]  # keep the blob (rows 8..15) inside the image


U32 = float(np.finfo(np.float32).eps) / 2  # float32 unit roundoff, 2**-24
INVARIANT_REDUCTIONS = (27, 4)  # terms per output: conv 3*3*3, linear 4
POSITIONAL_REDUCTIONS = (27, 4 * SIZE * SIZE, 8)  # conv, fc1 over the flattened map, fc2


def f32_tol(scale: float | np.ndarray, *reductions: int) -> float | np.ndarray:
    """How far a float32 result may sit from its exact value, or from another float32 order (issue 11).

    Per layer, a sum of n products errs by about sqrt(n) units of roundoff of the values' scale
    (Higham & Mary 2019, probabilistic bound); 8x that for headroom. It follows the values and the
    reductions, not one torch build's rounding. Here the scale is a feature vector's norm: an
    invariance that does not hold moves features by a sizeable share of it.
    """
    return 8 * sum(math.sqrt(n) for n in reductions) * U32 * scale


def _loaded(net: nn.Module, layers: tuple[LayerInfo, ...]) -> LoadedModel:
    return LoadedModel(net.eval(), "toy", 3, SIZE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), layers, 0)


def _invariant_net() -> LoadedModel:
    """conv + ReLU + global max pool + linear: translation-invariant while the content stays inside."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    layers = (
        LayerInfo("conv1", "1", "conv", (4, SIZE, SIZE), 4, 3, 1, 0.0),
        LayerInfo("pool", "2", "pool", (4, 1, 1), 4, SIZE, SIZE, 11.5),
        LayerInfo("fc", "4", "linear", (3,), 3, SIZE, SIZE, 11.5),
        LayerInfo("prob", "", "prob", (3,), 3, SIZE, SIZE, 11.5),
    )
    return _loaded(net, layers)


def _positional_net() -> LoadedModel:
    """conv + ReLU + flatten + two linears: every position has its own weights."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * SIZE * SIZE, 8), nn.ReLU(),
        nn.Linear(8, 3),
    )
    layers = (
        LayerInfo("conv1", "1", "conv", (4, SIZE, SIZE), 4, 3, 1, 0.0),
        LayerInfo("fc1", "4", "linear", (8,), 8, SIZE, SIZE, 11.5),
        LayerInfo("fc2", "5", "linear", (3,), 3, SIZE, SIZE, 11.5),
        LayerInfo("prob", "", "prob", (3,), 3, SIZE, SIZE, 11.5),
    )
    return _loaded(net, layers)


def _blobs(n: int) -> torch.Tensor:
    """Random 8x8 blobs in the middle of a black image (the border median, hence the fill, is 0)."""
    torch.manual_seed(2)
    images = torch.zeros(n, 3, SIZE, SIZE)
    images[..., 8:16, 8:16] = torch.rand(n, 3, 8, 8)
    return images


def test_translation_invariant_net_is_flat_and_positional_net_is_not() -> None:
    images = _blobs(2)
    labels = [0, 2]
    kw = {"translations": SHIFTS, "rotations": [0.0, 90.0], "scales": [1.0, 0.75], "device": "cpu"}
    flat = invariance(_invariant_net(), images, labels, layers=["conv1", "pool", "fc"], **kw)
    assert flat.layers == ("conv1", "pool", "fc")
    t = flat.curves["translation"]
    assert t.unit == "px" and t.distance.shape == (3, 2, 5) and t.true_prob.shape == (2, 5)
    np.testing.assert_array_equal(t.amounts, SHIFTS)
    # after global max pooling: the same features wherever the blob is, so the same probabilities,
    # up to float32 roundoff of each layer's scale (a shifted input may be summed in another order)
    zero = f32_tol(flat.base_norm[:, :, None], *INVARIANT_REDUCTIONS)  # [L, B, 1]
    assert (t.distance[1:] <= zero[1:]).all(), (t.distance[1:], zero[1:])
    p_tol = 2 * f32_tol(float(flat.base_norm[2].max()), *INVARIANT_REDUCTIONS)  # fc = the logits
    np.testing.assert_allclose(t.true_prob, np.repeat(flat.base_true_prob[:, None], 5, axis=1), atol=p_tol)
    # conv1 is equivariant, not invariant: its map moves with the blob
    moved = np.array(SHIFTS) != 0
    assert (t.relative[0][:, moved] > 0.1).all() and (t.distance[0][:, ~moved] <= zero[0]).all()
    np.testing.assert_allclose(t.relative, t.distance / flat.base_norm[:, :, None], rtol=1e-5)

    positional = invariance(_positional_net(), images, labels, layers=["conv1", "fc2"], **kw)
    t = positional.curves["translation"]
    zero = f32_tol(positional.base_norm[:, :, None], *POSITIONAL_REDUCTIONS)
    assert (t.relative[1][:, moved] > 1e-3).all()
    assert (t.distance[:, :, ~moved] <= zero).all()
    # the identity amounts of the other kinds change nothing either
    assert (positional.curves["rotation"].distance[..., :1] <= zero).all()
    assert (positional.curves["scale"].distance[..., :1] <= zero).all()
    assert (positional.curves["rotation"].distance[..., 1] > 100 * zero[..., 0]).all()


def test_a_background_only_image_is_invariant_to_everything() -> None:
    # the fill is the border median, so a uniform image stays uniform under every transform
    images = torch.full((1, 3, SIZE, SIZE), 0.8)
    res = invariance(
        _positional_net(), images, [1], layers=None, translations=[-5.0, 7.0], rotations=[33.0, 180.0],
        scales=[0.6, 1.4], device="cpu",
    )
    assert res.layers == ("conv1", "fc1")  # default: first layer and the linear before the output
    np.testing.assert_allclose(res.fill, 0.8)
    zero = f32_tol(res.base_norm[:, :, None], *POSITIONAL_REDUCTIONS)  # float32 roundoff of each layer
    # fc1 feeds fc2 (8 terms) and the softmax: |d prob| <= 2 max |d logit| <= 2 * ||W2|| * d fc1
    w2 = float(torch.linalg.matrix_norm(_positional_net().module[5].weight.detach(), ord=2))
    p_tol = 2 * w2 * float(zero[1].max()) + 2 * f32_tol(w2 * float(res.base_norm[1].max()), 8)
    for curves in res.curves.values():
        assert (curves.distance <= zero).all(), (curves.distance, zero)
        np.testing.assert_allclose(curves.true_prob[0], res.base_true_prob[0], rtol=0, atol=p_tol)


def test_batches_of_any_size_agree_and_kinds_can_be_skipped() -> None:
    images = _blobs(3)
    kw = {"layers": ["conv1", "fc1"], "translations": SHIFTS, "rotations": [], "scales": [0.8, 1.2]}
    small = invariance(_positional_net(), images, [0, 1, 2], batch_size=2, **kw)
    large = invariance(_positional_net(), images, [0, 1, 2], batch_size=64, **kw)
    assert list(small.curves) == ["translation", "scale"]
    # float sums depend on the batch composition: both sides within float32 roundoff of the features
    tol = 2 * f32_tol(large.base_norm[:, :, None], *POSITIONAL_REDUCTIONS)  # [L, B, 1]
    for kind in small.curves:
        assert (np.abs(small.curves[kind].distance - large.curves[kind].distance) <= tol).all()
        np.testing.assert_array_equal(small.curves[kind].top_class, large.curves[kind].top_class)


def test_transforms_move_content_as_documented() -> None:
    torch.manual_seed(3)
    x = torch.rand(2, 3, 8, 8)
    fill = border_fill(x)
    down = transform(x, "translation", 3.0, fill)
    torch.testing.assert_close(down[..., 3:, :], x[..., :-3, :])
    torch.testing.assert_close(down[..., :3, :], fill.expand(2, 3, 3, 8))
    torch.testing.assert_close(transform(x, "rotation", 90.0, fill), torch.rot90(x, 1, dims=(-2, -1)))
    assert transform(x, "scale", 0.5, fill).shape == x.shape == transform(x, "scale", 1.5, fill).shape
    with pytest.raises(ValueError, match="kind must be one of"):
        transform(x, "shear", 1.0, fill)


def test_unknown_layer_lists_names() -> None:
    with pytest.raises(ModelError, match=r"no layer 'fc7'.*conv1"):
        invariance(_invariant_net(), _blobs(1), [0], layers=["conv1", "fc7"])
