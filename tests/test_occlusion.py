"""Occlusion sensitivity (Zeiler & Fergus 2013) and the empirical receptive field (Zhou et al. 2015)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sitegen.analyses.occlusion import empirical_rf, occluder_grid, occlusion
from sitegen.errors import ModelError
from sitegen.models.types import LayerInfo, LoadedModel

IDENTITY = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _loaded(net: nn.Module, layers: tuple[LayerInfo, ...], size: int, norm=IDENTITY) -> LoadedModel:
    return LoadedModel(net.eval(), "test", 2, size, norm[0], norm[1], layers, 0)


# --- occlusion ---------------------------------------------------------------------------------------

REGION = (slice(4, 8), slice(10, 14))  # the only pixels the class depends on


def _region_net() -> tuple[nn.Module, LoadedModel]:
    """Class 1 iff the 4x4 region is bright: logit1 = 20 * mean(region over channels) - 10, logit0 = 0."""
    conv = nn.Conv2d(3, 2, kernel_size=16)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.0, -10.0]))
        conv.weight[1, :, REGION[0], REGION[1]] = 20.0 / (3 * 16)
    net = nn.Sequential(conv, nn.Flatten())
    layer = LayerInfo("conv1", "0", "conv", (2, 1, 1), 2, 16, 16, 7.5)
    return net, _loaded(net, (layer,), 16)


def test_occluding_the_informative_region_drops_the_probability() -> None:
    net, loaded = _region_net()
    image = torch.full((1, 3, 16, 16), 0.2)
    image[..., REGION[0], REGION[1]] = 1.0
    res = occlusion(loaded, image, [1], size=4, stride=2, device="cpu", batch_size=10)

    tops, lefts = occluder_grid((16, 16), 4, 2)
    np.testing.assert_array_equal(res.rows, tops + 1.5)
    np.testing.assert_array_equal(res.cols, lefts + 1.5)
    # known answer: the region's mean is 1 where visible and 0.5 (the grey) under the square
    overlap = np.array([[max(0, min(t + 4, 8) - max(t, 4)) * max(0, min(lf + 4, 14) - max(lf, 10))
                         for lf in lefts] for t in tops])
    logit = 20 * (1.0 - 0.5 * overlap / 16) - 10
    np.testing.assert_allclose(res.true_prob[0], 1 / (1 + np.exp(-logit)), rtol=1e-5)
    np.testing.assert_allclose(res.activation[0], logit, atol=1e-4)  # unit 1, the strongest
    assert res.units.tolist() == [1] and res.predicted.tolist() == [1] and res.layer == "conv1"
    assert res.base_true_prob[0] == pytest.approx(1 / (1 + np.exp(-10)), rel=1e-6)
    # hiding the whole region drops the probability to chance; hiding anything else changes nothing
    assert np.unravel_index(res.true_prob[0].argmin(), res.true_prob[0].shape) == (2, 5)
    assert res.true_prob[0, 2, 5] == pytest.approx(0.5, abs=1e-6)
    np.testing.assert_allclose(res.true_prob[0][overlap == 0], res.base_true_prob[0], rtol=1e-6)
    np.testing.assert_array_equal(res.pred_prob, res.true_prob)  # predicted = true class here
    assert res.top_class[0, 2, 5] in (0, 1) and (res.top_class[0][overlap == 0] == 1).all()


def _conv_net() -> tuple[nn.Sequential, LoadedModel]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )
    layers = (
        LayerInfo("conv1", "1", "conv", (4, 20, 18), 4, 3, 1, 0.0),
        LayerInfo("conv2", "4", "conv", (6, 10, 9), 6, 8, 2, 0.5),
        LayerInfo("fc", "7", "linear", (5,), 5, 20, 20, 9.5),
    )
    norm = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    return net, _loaded(net, layers, 20, norm)


def test_occlusion_batched_equals_one_at_a_time() -> None:
    net, loaded = _conv_net()
    images = torch.rand(2, 3, 20, 18)  # non-square
    labels = [1, 4]
    calls: list[tuple[int, int]] = []
    strongest = occlusion(
        loaded, images, labels, size=6, stride=3, device="cpu", batch_size=7,
        progress=lambda *a: calls.append(a)
    )
    # one call per forward pass of 7 occluded copies, counting copies (2 images x 25 positions)
    assert calls == [(min(d, 50), 50) for d in range(7, 57, 7)]
    fixed = occlusion(loaded, images, labels, size=6, stride=3, unit=3, device="cpu", batch_size=64)
    assert strongest.layer == "conv2"  # default: the last conv layer
    tops, lefts = occluder_grid((20, 18), 6, 3)
    assert strongest.true_prob.shape == (2, len(tops), len(lefts)) == (2, 5, 5)

    # the reference: one occluded copy per forward, the square painted by slicing
    probs = torch.empty(2, 5, 5, 5)
    maxima = torch.empty(2, 5, 5, 6)
    with torch.no_grad():
        base = net[:5](loaded.normalize(images))
        units = base.amax(dim=(2, 3)).argmax(1)
        pred = net[5:](base).argmax(1)
        for b in range(2):
            for i, t in enumerate(tops):
                for j, lf in enumerate(lefts):
                    occluded = images[b : b + 1].clone()
                    occluded[..., t : t + 6, lf : lf + 6] = 0.5  # grey in un-normalized space
                    h = net[:5](loaded.normalize(occluded))
                    probs[b, i, j] = net[5:](h).softmax(1)[0]
                    maxima[b, i, j] = h[0].amax(dim=(1, 2))
    for res, unit_of in ((strongest, units), (fixed, torch.tensor([3, 3]))):
        np.testing.assert_array_equal(res.units, unit_of.numpy())
        np.testing.assert_array_equal(res.predicted, pred.numpy())
        for b in range(2):
            np.testing.assert_allclose(res.true_prob[b], probs[b, ..., labels[b]].numpy(), atol=1e-6)
            np.testing.assert_allclose(res.pred_prob[b], probs[b, ..., pred[b]].numpy(), atol=1e-6)
            np.testing.assert_array_equal(res.top_class[b], probs[b].argmax(-1).numpy())
            np.testing.assert_allclose(res.activation[b], maxima[b, ..., unit_of[b]].numpy(), atol=1e-5)


def test_occlusion_rejects_bad_unit_and_size() -> None:
    _, loaded = _conv_net()
    images = torch.rand(1, 3, 20, 18)
    with pytest.raises(ModelError, match="unit 6 is not a unit of layer 'conv2'"):
        occlusion(loaded, images, [0], size=6, stride=3, unit=6)
    with pytest.raises(ValueError, match="occluder size"):
        occlusion(loaded, images, [0], size=19, stride=3)
    with pytest.raises(ModelError, match="no layer 'conv9'"):
        occlusion(loaded, images, [0], layer="conv9")


# --- empirical receptive field -----------------------------------------------------------------------


def test_empirical_rf_of_a_box_filter_is_known_and_centred() -> None:
    # one 5x5 conv of ones (padding 2): occluding with grey (0.5) a constant white (1.0) image lowers
    # a unit by 0.5 * 3 channels * (overlap of the occluder with its 5x5 field): an exact, centred map
    conv = nn.Conv2d(3, 1, 5, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    layer = LayerInfo("conv1", "0", "conv", (1, 20, 20), 1, 5, 1, 0.0)
    loaded = _loaded(nn.Sequential(conv), (layer,), 20)
    images = torch.ones(3, 3, 20, 20)
    positions = [(9, 9), (10, 7), (6, 12)]
    erf = empirical_rf(loaded, layer, 0, images, positions, occluder=3, stride=1, map_size=15)

    ov = np.array([0, 0, 0, 0, 1, 2, 3, 3, 3, 2, 1, 0, 0, 0, 0], np.float64)  # offsets -7..7
    expected = 0.5 * 3 * np.outer(ov, ov)
    np.testing.assert_allclose(erf.map, expected, atol=1e-4)
    assert erf.map.shape == (15, 15) and erf.analytic_size == 5
    # all the mass lies in the analytic box grown by the occluder's half-width, centred
    box = erf.map[5:10, 5:10].sum()
    assert erf.map[4:11, 4:11].sum() == pytest.approx(erf.map.sum())
    assert box / erf.map.sum() == pytest.approx(13**2 / 15**2)
    assert erf.centroid == pytest.approx((0.0, 0.0), abs=1e-6)
    # 90 % of the mass (202.5 of 225, in units of 1.5) lies between the 5x5 (169) and 7x7 (225) squares
    assert erf.effective_size == pytest.approx(5 + 2 * (202.5 - 169) / (225 - 169), rel=1e-4)
    assert erf.coverage[4:11, 4:11].min() == 1.0  # every image measured the whole field
    assert erf.coverage.min() < 1.0  # (6, 12): an occluder cannot be centred 7 px above row 6
    np.testing.assert_allclose(erf.base, 75.0)  # 5 * 5 * 3 white pixels


def test_empirical_rf_restricted_equals_full_and_stays_in_the_field() -> None:
    net, loaded = _conv_net()
    layer = loaded.layer("conv2")  # RF 8 px, stride 2, offset 0.5
    torch.manual_seed(1)
    images = torch.rand(3, 3, 20, 18)
    with torch.no_grad():  # as mining finds them: the strongest unit and its argmax in each image
        maps = net[:5](loaded.normalize(images))
    unit = int(maps.amax(dim=(0, 2, 3)).argmax())
    flat = maps[:, unit].flatten(1).argmax(1)
    positions = np.stack([(flat // 9).numpy(), (flat % 9).numpy()], axis=1)
    kw = {"occluder": 3, "stride": 2, "device": "cpu", "batch_size": 17}
    fast = empirical_rf(loaded, layer, unit, images, positions, restrict=True, **kw)
    full = empirical_rf(loaded, layer, unit, images, positions, restrict=False, **kw)
    np.testing.assert_allclose(fast.discrepancy, full.discrepancy, atol=1e-5)
    np.testing.assert_allclose(fast.map, full.map, atol=1e-5)
    assert full.map.sum() > 0
    # the default map holds the field grown by the occluder and one grid step each side: even, 8 + 2 + 2
    side = full.map.shape[0]
    assert side == 12 and (side - layer.rf_size) % 2 == 0
    grow = (3 - 1) // 2 + (2 - 1)
    lo, hi = (side - layer.rf_size) // 2 - grow, (side + layer.rf_size) // 2 + grow
    assert full.map[lo:hi, lo:hi].sum() == pytest.approx(full.map.sum(), rel=1e-6)
    assert 0 < full.effective_size <= side
    assert full.discrepancy.shape == (3, 9, 8)


def test_empirical_rf_rejects_bad_positions() -> None:
    _, loaded = _conv_net()
    layer = loaded.layer("conv2")
    with pytest.raises(ModelError, match="outside layer 'conv2'"):
        empirical_rf(loaded, layer, 0, torch.rand(1, 3, 20, 18), [(10, 0)], occluder=3, stride=2)
    with pytest.raises(ModelError, match="unit 9"):
        empirical_rf(loaded, layer, 9, torch.rand(1, 3, 20, 18), [(1, 1)], occluder=3, stride=2)


@pytest.mark.parametrize(
    ("given", "input_size", "want"),
    [
        ((None, None), 64, (8, 4)),  # the embedded default's 64 px doodles: as before
        ((None, None), 224, (28, 14)),  # not 2,809 positions of an 8 px square
        ((None, None), 32, (4, 2)),
        ((10, None), 224, (10, 5)),
        ((10, 3), 224, (10, 3)),  # the spec's values win
    ],
)
def test_occlusion_defaults_scale_with_the_input(given, input_size, want) -> None:
    from sitegen.analyses.occlusion import occluder_grid, occlusion_geometry

    assert occlusion_geometry(*given, input_size) == want
    if given == (None, None):
        tops, lefts = occluder_grid((input_size, input_size), *want)
        assert len(tops) == len(lefts) == 15  # the same map resolution at every input size


def test_empirical_rf_defaults_follow_zhou_et_al() -> None:
    from sitegen.analyses.erf import erf_geometry

    assert erf_geometry(None, None, 227) == (11, 3)
    assert erf_geometry(None, None, 224) == (11, 3)
    assert erf_geometry(None, None, 64) == (3, 1)
    assert erf_geometry(5, 3, 64) == (5, 3)


def test_occluded_batch_keeps_the_memory_of_256_small_copies() -> None:
    from sitegen.analyses.occlusion import occluded_batch

    assert occluded_batch(64) == 256
    assert occluded_batch(224) == 21
    assert occluded_batch(32) == 1024
    assert occluded_batch(4096) == 4
