"""Reconstructions: equal to captum, batched == single, cropped == whole, and the edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from sitegen.analyses import _crop, _hooks, _phase
from sitegen.analyses.reconstruct import (
    TileFile,
    display_cell,
    display_peak,
    reconstruct,
    reconstruct_topk,
    to_display,
)
from sitegen.analyses.reconstruct._cone import _Cone
from sitegen.analyses.reconstruct._engine import _schedule
from sitegen.analyses.reconstruct._plan import _Planner
from sitegen.analyses.reconstruct._tiles import _tile_whole
from sitegen.errors import ModelError
from sitegen.models.types import LayerInfo, LoadedModel
from sitegen.receptive_field import RF, receptive_fields, unit_box

captum_attr = pytest.importorskip("captum.attr")

METHODS = ("deconvnet", "guided", "gradient")


def _tiny_cnn() -> nn.Sequential:
    """conv(5, s2, p2) -> ReLU -> maxpool(3, s2) -> conv(3, p1) -> ReLU(inplace) -> conv(3, p1): a chain."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 5, 3, padding=1),
        nn.ReLU(),
    ).eval()


class _TinyClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = _tiny_cnn()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(20, 4)
        self.relu = nn.ReLU()
        self.out = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.relu(self.fc(torch.flatten(self.pool(self.features(x)), 1))))


class _FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.relu(self.conv2(self.act(self.conv1(x)))))


class _Residual(nn.Module):
    """Not a chain (a residual add): reconstructions must fall back to the whole image."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.stem(x))
        return self.relu2(self.conv(y) + y)


def _images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Non-square inputs: a random field plus a ramp (torch.arange) so that every pixel differs."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w) / (h * w)
    return torch.randn(n, 3, h, w, generator=g) + ramp


def _activations(model: nn.Module, path: str, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), _hooks.truncated(model, _hooks.get_module(model, path)) as fwd:
        return fwd(x)


def _argmax(act: torch.Tensor, b: int, unit: int) -> tuple[int, int]:
    flat = int(act[b, unit].flatten().argmax())
    return divmod(flat, act.shape[-1])


_CAPTUM = {
    "deconvnet": "NeuronDeconvolution",
    "guided": "NeuronGuidedBackprop",
    "gradient": "NeuronGradient",
}


def _captum(
    model: nn.Module, path: str, method: str, x: torch.Tensor, selector: tuple[int, ...]
) -> torch.Tensor:
    """captum's attribution (seed 1) for one image."""
    cls = getattr(captum_attr, _CAPTUM[method])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model, _hooks.get_module(model, path)).attribute(x.clone(), selector)[0]


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """float32 against captum: error within ``rel`` x the expected reconstruction's peak."""
    scale = float(expected.abs().max())
    assert scale > 0, "degenerate case: the expected reconstruction is all zero"
    err = float((actual - expected).abs().max())
    assert err <= rel * scale, f"max abs diff {err:.3g} > {rel} x {scale:.3g}"


def _assert_same(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-10) -> None:
    """Two float64 computations of the same reconstructions (summed in other orders, batched
    otherwise): equal to ``rel`` x each reconstruction's peak. float64 rounding is ~1e-16 per
    operation, ~1e-13 over these reductions; a wrong route or rule is off by ~1e-1 of the peak.
    (float32 at rtol 1e-5 was fragile: two paths differed by 4e-5 relative on torch 2.14.1.)"""
    assert actual.dtype == expected.dtype == torch.float64, "compare two-path results in float64"
    assert actual.shape == expected.shape
    if expected.dim() <= 3:
        actual, expected = actual[None], expected[None]
    peak = expected.abs().flatten(1).amax(1)
    # a dead unit (ReLU zero at its position) reconstructs to exactly zero on every path
    assert int((peak > 0).sum()) * 4 >= len(peak), "degenerate case: most reconstructions are all zero"
    err = (actual - expected).abs().flatten(1).amax(1)
    worst = int((err / peak.clamp(min=1e-300)).argmax())
    assert bool((err <= rel * peak).all()), (
        f"reconstruction {worst}: max abs diff {float(err[worst]):.3g} > {rel} x {float(peak[worst]):.3g}"
    )


# --- equality with captum -------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", ["1", "4", "6"])
def test_tiny_cnn_equals_captum_times_value(method: str, path: str) -> None:
    model = _tiny_cnn()
    x = _images(3, 29, 37)
    units = [0, 3, 4]
    rec = reconstruct(model, path, x, units, method=method)
    act = _activations(model, path, x)
    for b, u in enumerate(units):
        r, c = _argmax(act, b, u)
        expected = _captum(model, path, method, x[b : b + 1], (u, r, c)) * act[b, u, r, c]
        _assert_close(rec[b], expected)


@pytest.mark.parametrize("method", ["deconvnet", "guided"])
@pytest.mark.parametrize("path", ["features.4", "features.11"])
def test_alexnet_equals_captum(method: str, path: str) -> None:
    torch.manual_seed(1)
    model = torchvision.models.alexnet(weights=None).eval()
    x = _images(2, 99, 99, seed=1)
    units = [5, 17]
    rec = reconstruct(model, path, x, units, method=method)
    act = _activations(model, path, x)
    for b, u in enumerate(units):
        r, c = _argmax(act, b, u)
        expected = _captum(model, path, method, x[b : b + 1], (u, r, c)) * act[b, u, r, c]
        _assert_close(rec[b], expected)
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU)), "inplace flags not restored"


def test_maxpool_ties_route_like_captum() -> None:
    """Mostly-dead ReLUs leave max-pool windows of equal zeros: deconvnet must route them like autograd."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3, padding=1), nn.ReLU()
    ).eval()
    conv1 = model[0]
    assert isinstance(conv1, nn.Conv2d) and conv1.bias is not None
    with torch.no_grad():
        conv1.bias.fill_(-1.0)  # 95 % of conv1's outputs are <= 0
    x = _images(2, 24, 22, seed=7)
    act = _activations(model, "4", x)
    assert float((_activations(model, "1", x) == 0).float().mean()) > 0.9
    for b, u in enumerate([1, 2]):
        r, c = _argmax(act, b, u)
        assert act[b, u, r, c] > 0
        rec = reconstruct(model, "4", x[b : b + 1], [u], [(r, c)])
        _assert_close(rec[0], _captum(model, "4", "deconvnet", x[b : b + 1], (u, r, c)) * act[b, u, r, c])


def test_linear_and_prob_units_equal_captum() -> None:
    model = _TinyClassifier().eval()
    x = _images(2, 29, 37)
    act = _activations(model, "relu", x)
    units = [int(act[0].argmax()), int(act[1].argmax())]
    rec = reconstruct(model, "relu", x, units, method="deconvnet")
    for b, u in enumerate(units):
        _assert_close(rec[b], _captum(model, "relu", "deconvnet", x[b : b + 1], (u,)) * act[b, u])
    # prob: the softmax output, through a LoadedModel
    loaded = _loaded(model, 37)
    probs = torch.softmax(model(x), dim=1).detach()
    rec = reconstruct(loaded, "prob", x, [2, 0], method="guided")
    wrapped = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    for b, u in enumerate([2, 0]):
        _assert_close(rec[b], _captum(wrapped, "1", "guided", x[b : b + 1], (u,)) * probs[b, u])


def test_residual_model_falls_back_to_whole_image() -> None:
    torch.manual_seed(0)
    model = _Residual().eval()
    x = _images(2, 12, 15)
    planner = _Planner(model, crop=True)
    assert planner.plan("relu2", False, x).spatial is None
    assert planner.plan("relu1", False, x).spatial is not None  # the chain before the residual add
    rec = reconstruct(model, "relu2", x, [1, 3], method="deconvnet")
    act = _activations(model, "relu2", x)
    for b, u in enumerate([1, 3]):
        r, c = _argmax(act, b, u)
        _assert_close(rec[b], _captum(model, "relu2", "deconvnet", x[b : b + 1], (u, r, c)) * act[b, u, r, c])


# --- whole-image pairs (linear, prob, unchained convs): one forward per image, batched rounds ------


def _whole_image_pairs(n_images: int, seed: int = 0) -> list[int]:
    """Images of the pairs: uneven counts (one image with many), so batches run several rounds."""
    g = torch.Generator().manual_seed(seed)
    extra = torch.randint(0, n_images, (3 * n_images,), generator=g).tolist()
    return [0] * 7 + list(range(n_images)) + extra


@pytest.mark.parametrize("method", METHODS)
def test_whole_image_batched_equals_one_at_a_time(method: str) -> None:
    """Many pairs per image (shared forward, rounds, images forwarded again): == each pair alone."""
    torch.manual_seed(0)
    model = _TinyClassifier().eval()
    loaded = _loaded(model, 37)  # its dummy forwards are float32
    model.double()  # in place: the loaded model's module too
    images = _images(5, 29, 37, seed=2).double()
    which = _whole_image_pairs(5)
    x = images[which]
    for layer, count in (("relu", 4), ("fc", 4), ("out", 3)):
        units = [(3 * i + 1) % count for i in range(len(which))]
        batched = reconstruct(model, layer, x, units, method=method, batch_size=2)
        alone = torch.cat(
            [
                reconstruct(model, layer, images[i : i + 1], [u], method=method)
                for i, u in zip(which, units, strict=True)
            ]
        )
        _assert_same(batched, alone)
    units = [i % 3 for i in range(len(which))]
    with torch.inference_mode():  # inference tensors in, as the build may pass
        batched = reconstruct(loaded, "prob", x.clone(), units, method=method, batch_size=3)
    alone = torch.cat(
        [
            reconstruct(loaded, "prob", images[i : i + 1], [u], method=method)
            for i, u in zip(which, units, strict=True)
        ]
    )
    _assert_same(batched, alone)
    # a conv layer that cannot be cropped (residual add): whole images, seeded at given positions
    residual = _Residual().double().eval()
    small = _images(4, 12, 15, seed=4).double()
    which = _whole_image_pairs(4, seed=1)
    positions = [((5 * i) % 12, (7 * i) % 15) for i in range(len(which))]
    units = [i % 4 for i in range(len(which))]
    assert _Planner(residual, crop=True).plan("relu2", False, small).spatial is None
    batched = reconstruct(residual, "relu2", small[which], units, positions, method=method, batch_size=3)
    alone = torch.cat(
        [
            reconstruct(residual, "relu2", small[i : i + 1], [u], [p], method=method)
            for i, u, p in zip(which, units, positions, strict=True)
        ]
    )
    _assert_same(batched, alone)


@pytest.mark.parametrize("method", METHODS)
def test_whole_image_pairs_sharing_images_equal_captum(method: str) -> None:
    """Every live unit of fc1 and every class of prob on each of 3 images, in one call each."""
    torch.manual_seed(0)
    model = _TinyClassifier().eval()
    images = _images(3, 29, 37, seed=5)
    act = _activations(model, "relu", images)
    pairs = [(b, u) for b in range(3) for u in range(4) if act[b, u] > 0]
    assert len(pairs) >= 6
    which, units = [b for b, _ in pairs], [u for _, u in pairs]
    rec = reconstruct(model, "relu", images[which], units, method=method, batch_size=2)
    for q, (b, u) in enumerate(pairs):
        _assert_close(rec[q], _captum(model, "relu", method, images[b : b + 1], (u,)) * act[b, u])
    loaded = _loaded(model, 37)
    probs = torch.softmax(model(images), dim=1).detach()
    wrapped = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    pairs = [(b, u) for b in range(3) for u in range(3)]
    which, units = [b for b, _ in pairs], [u for _, u in pairs]
    rec = reconstruct(loaded, "prob", images[which], units, method=method)
    for q, (b, u) in enumerate(pairs):
        _assert_close(rec[q], _captum(wrapped, "1", method, images[b : b + 1], (u,)) * probs[b, u])


@pytest.mark.parametrize("method", ["deconvnet", "guided"])
def test_alexnet_fc6_equals_captum(method: str) -> None:
    """The whole alexnet below fc6: strided conv1 (phase backward), max-pools, adaptive average pool."""
    torch.manual_seed(1)
    model = torchvision.models.alexnet(weights=None).eval()
    images = _images(2, 99, 99, seed=1)
    act = _activations(model, "classifier.2", images)
    pairs = [(b, int(u)) for b in range(2) for u in act[b].argsort(descending=True)[:3]]
    which, units = [b for b, _ in pairs], [u for _, u in pairs]
    rec = reconstruct(model, "classifier.2", images[which], units, method=method)
    for q, (b, u) in enumerate(pairs):
        expected = _captum(model, "classifier.2", method, images[b : b + 1], (u,)) * act[b, u]
        _assert_close(rec[q], expected)


def test_schedule_covers_every_pair_once_and_caps_rounds() -> None:
    counts = torch.tensor([9, 0, 1, 1, 1, 4, 4, 3, 2])
    seen: dict[int, list[int]] = {}
    slots = 0
    for members, lo, take in _schedule(counts, 4):
        assert len(members) <= 4 and bool((take >= 1).all())
        slots += len(members) * int(take.max())
        for i, start, n in zip(members.tolist(), lo.tolist(), take.tolist(), strict=True):
            seen.setdefault(i, []).extend(range(start, start + n))
    assert seen == {i: list(range(c)) for i, c in enumerate(counts.tolist()) if c}
    # image 0 does not hold three images idle for 5 rounds: it is forwarded again instead
    assert slots <= int(counts.sum()) + 4


def test_tile_whole_equals_display_cell() -> None:
    """The batched resize of whole-image tiles is display_cell's, bit for bit; grey sums channels."""
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(3, 3, 20, 20, generator=g) * torch.tensor([1.0, 1e-3, 0.0]).view(3, 1, 1, 1)
    for grey in (False, True):
        out = np.zeros((2, 2, 8, 8, 3), dtype=np.uint8)
        js, rs = np.array([1, 0, 1]), np.array([0, 1, 1])
        _tile_whole(out, js, rs, 8, 20, grey, torch.tensor([2, 0, 1]), grads[[2, 0, 1]], [0] * 3, [0] * 3)
        for e in range(3):
            assert np.array_equal(out[js[e], rs[e]], display_cell(grads[e], 8, grayscale=grey))
        assert (out[1, 1] == 128).all()
        assert grey == bool((out[..., 0] == out[..., 1]).all())


def test_display_stretches_robustly_and_greys_by_channel_sum() -> None:
    """One outlier no longer squeezes the rest into flat grey: the 99.5th percentile saturates."""
    rng = np.random.default_rng(0)
    rec = rng.normal(size=(3, 40, 40)).astype(np.float32)
    rec[0, 0, 0] = 1000.0  # a single hot pixel
    out = to_display(rec)
    assert out[0, 0, 0] == 255
    spread = np.percentile(out[1:, 1:], [5, 95])
    assert spread[1] - spread[0] > 120, "the bulk of the signal uses most of the grey range"
    peak = display_peak(rec)
    mags = np.sort(np.abs(rec).ravel())
    assert mags[int(0.99 * mags.size)] < peak < mags[-2]
    grey = to_display(rec, grayscale=True)
    assert (grey[..., 0] == grey[..., 2]).all()
    summed = rec.sum(axis=0)
    np.testing.assert_array_equal(grey[..., 0], to_display(summed[None])[..., 0])
    assert (to_display(np.zeros((3, 4, 4), np.float32)) == 128).all()
    sparse = np.zeros((3, 50, 50), np.float32)
    sparse[:, 10, 10] = [2.0, -1.0, 0.5]
    assert to_display(sparse)[10, 10, 0] == 255, "zeros outside the signal do not count"


# --- batching and cropping ------------------------------------------------------------------------


def test_batched_equals_one_at_a_time() -> None:
    model = _tiny_cnn().double()
    x = _images(5, 31, 26).double()
    units = [4, 0, 2, 2, 1]
    positions = [(0, 0), (3, 2), (6, 5), (1, 5), (6, 0)]  # the map is 7x6
    batched = reconstruct(model, "6", x, units, positions, batch_size=2)
    single = torch.cat(
        [reconstruct(model, "6", x[b : b + 1], units[b : b + 1], positions[b : b + 1]) for b in range(5)]
    )
    _assert_same(batched, single)


def test_crop_batches_are_capped_by_graph_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Crops per backward stay within GRAPH_BYTES of retained graph (issue 13: at batch_size 64, 120
    conv5 crops held ~0.4 GB, the seed-scale peak RSS), and the cap changes no value."""
    from sitegen.analyses.reconstruct import _engine

    model = _tiny_cnn().double()
    x = _images(6, 48, 48).double()
    units = [4, 0, 2, 2, 1, 3]
    positions = [(3, 3), (4, 5), (5, 4), (6, 6), (3, 7), (7, 3)]  # interior: one 25 px crop shape
    sizes: list[int] = []
    backward = _engine._Engine._backward

    def counted(self, fwd, images, image_of, units_, part, *rest):  # type: ignore[no-untyped-def]
        sizes.append(len(part))
        return backward(self, fwd, images, image_of, units_, part, *rest)

    monkeypatch.setattr(_engine._Engine, "_backward", counted)
    free = reconstruct(model, "6", x, units, positions, batch_size=64)
    assert sizes == [6]  # one crop shape, one batch
    sizes.clear()
    monkeypatch.setattr(_engine, "GRAPH_BYTES", 1)  # one whole image's graph: 48² / 25² = 3 crops
    capped = reconstruct(model, "6", x, units, positions, batch_size=64)
    assert sizes == [3, 3]
    _assert_same(capped, free)


@pytest.mark.parametrize("method", METHODS)
def test_cropped_equals_uncropped_everywhere(method: str) -> None:
    """Every position of the layer: interior ("valid" crops) and border ("aligned" crops) units."""
    model = _tiny_cnn()
    h, w = 33, 26
    act = _activations(model, "4", _images(1, h, w))
    rows, cols = act.shape[-2:]
    grid = [(r, c) for r in range(rows) for c in range(cols)]
    x = _images(len(grid), h, w, seed=3)
    units = [i % 8 for i in range(len(grid))]
    model64, x64 = _tiny_cnn().double(), x.double()
    cropped = reconstruct(model64, "4", x64, units, grid, method=method)
    whole = reconstruct(model64, "4", x64, units, grid, method=method, crop=False)
    _assert_same(cropped, whole)
    # the plan really crops, and some units are interior, some at the border
    plan = _Planner(model, crop=True).plan("4", False, x)
    assert (
        plan.spatial == (model[0], model[2], model[3]) and plan.rows == _crop.chain_spans(list(model)[:5])[0]
    )
    assert {_crop.axis_crop(plan.rows, r, h).valid for r, _ in grid} == {True, False}


def test_zero_outside_receptive_field() -> None:
    model = _tiny_cnn()
    h, w = 40, 35
    x = _images(4, h, w, seed=5)
    positions = [(0, 0), (4, 3), (8, 7), (2, 7)]  # the map is 9x8
    rec = reconstruct(model, "5", x, [0, 1, 2, 3], positions)  # conv output: no dead (zero) units
    rf = receptive_fields(model, 40)["5"]
    for b, (r, c) in enumerate(positions):
        top, left, bottom, right = unit_box(rf, r, c)
        mask = torch.ones(h, w, dtype=torch.bool)
        mask[max(top, 0) : bottom, max(left, 0) : right] = False
        assert float(rec[b, :, mask].abs().max()) == 0.0
        assert float(rec[b, :, ~mask].abs().max()) > 0.0


def test_alexnet_crops_equal_whole_image() -> None:
    torch.manual_seed(2)
    model = torchvision.models.alexnet(weights=None).eval()
    x = _images(4, 127, 127, seed=2)
    assert _Planner(model, crop=True).plan("features.6", False, x).spatial is not None
    positions = [(0, 0), (3, 3), (5, 2), (3, 5)]  # conv3 is 6x6 at 127 px; (3, 3) is interior
    model, x = model.double(), x.double()
    # conv3's output, before its ReLU (after it, two of these four units are dead: all zero)
    rec = reconstruct(model, "features.6", x, [1, 2, 3, 4], positions)
    whole = reconstruct(model, "features.6", x, [1, 2, 3, 4], positions, crop=False)
    _assert_same(rec, whole)


@pytest.mark.parametrize(
    ("k", "s", "p", "size"),
    [
        (11, 4, 2, 67),
        (11, 4, 0, 64),
        (11, 4, (2, 0), (50, 43)),
        (5, 2, 2, 21),
        (3, 2, 1, 8),
        (3, 3, 0, 10),
        (2, 2, 0, 9),
    ],
)
def test_phase_conv_input_gradient_equals_autograd(k: int, s: int, p: int | tuple[int, int], size) -> None:
    """The strided-conv input gradient computed by phases equals autograd's (up to float rounding)."""
    torch.manual_seed(3)
    h, w = (size, size) if isinstance(size, int) else size
    conv = nn.Conv2d(3, 7, k, stride=s, padding=p).double()
    x = torch.randn(2, 3, h, w, dtype=torch.float64, requires_grad=True)
    out = conv(x)
    seed = torch.randn_like(out)
    (expected,) = torch.autograd.grad(out, x, seed)
    with _phase.phase_backward([conv]):
        x2 = x.detach().requires_grad_(True)
        out2 = conv(x2)
        assert torch.equal(out2, out.detach())
        (got,) = torch.autograd.grad(out2, x2, seed)
    assert not conv._forward_hooks
    _assert_same(got, expected)


# --- one shared forward per image, cone backward --------------------------------------------------


def _odd_chain() -> nn.Sequential:
    """Every module kind the cone backward supports: BN, dilated and grouped convs, dropout, identity."""
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2),
        nn.Dropout(0.3),
        nn.ReLU(inplace=True),
        nn.Identity(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(8, 6, 3, stride=2, padding=1),
        nn.ReLU(),
    )
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm2d)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("net", "path", "size"), [("tiny", "4", (33, 26)), ("odd", "9", (31, 37))])
def test_shared_forward_equals_crop_path_everywhere(method: str, net: str, path: str, size) -> None:
    """Every position (interior and border cones), 3 images shared by all pairs, given and argmax.

    The odd chain's last conv, not its ReLU: after that ReLU 19 of the 20 grid units are dead (zero on
    both paths, a comparison that could not fail)."""
    model = _tiny_cnn() if net == "tiny" else _odd_chain()
    h, w = size
    act = _activations(model, path, _images(1, h, w))
    grid = [(r, c) for r in range(act.shape[-2]) for c in range(act.shape[-1])]
    x = _images(3, h, w, seed=3).double()[torch.arange(len(grid)) % 3]  # copies: found equal
    model = model.double()
    units = [i % act.shape[1] for i in range(len(grid))]
    for positions in (grid, None):
        shared = reconstruct(model, path, x, units, positions, method=method, shared_forward=True)
        cropped = reconstruct(model, path, x, units, positions, method=method, shared_forward=False)
        _assert_same(shared, cropped)


def test_shared_forward_all_layers_at_once_equals_one_at_a_time() -> None:
    """One image, units of every layer in one call (one forward) == each pair reconstructed alone."""
    model = _odd_chain().double()
    image = _images(1, 29, 34, seed=6).double()
    paths = ["0", "1", "2", "3", "4", "6", "8", "9", "10"]
    layers = [p for p in paths for _ in range(2)]
    units = [(3 * i) % 6 for i in range(len(layers))]
    together = reconstruct(model, layers, image.expand(len(layers), -1, -1, -1), units, shared_forward=True)
    alone = torch.cat(
        [
            reconstruct(model, path, image, [unit], shared_forward=False)
            for path, unit in zip(layers, units, strict=True)
        ]
    )
    _assert_same(together, alone)


@pytest.mark.parametrize("method", ["deconvnet", "guided"])
def test_shared_forward_alexnet_equals_captum(method: str) -> None:
    """Strided conv1 (phase backward), overlapping 3x3/2 max-pools, three layers on one image."""
    torch.manual_seed(1)
    model = torchvision.models.alexnet(weights=None).eval()
    x = _images(1, 99, 99, seed=1)
    layers, units = ["features.1", "features.4", "features.11"], [5, 17, 3]
    rec = reconstruct(model, layers, x.expand(3, -1, -1, -1), units, method=method, shared_forward=True)
    for b, (path, u) in enumerate(zip(layers, units, strict=True)):
        act = _activations(model, path, x)
        r, c = _argmax(act, 0, u)
        _assert_close(rec[b], _captum(model, path, method, x, (u, r, c)) * act[0, u, r, c])


def test_shared_forward_maxpool_ties_route_like_captum() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 4, 3, padding=1), nn.ReLU()
    ).eval()
    with torch.no_grad():
        model[0].bias.fill_(-1.0)  # most conv1 outputs <= 0: windows of equal zeros
    x = _images(1, 24, 22, seed=7)
    act = _activations(model, "4", x)
    rec = reconstruct(model, "4", x.expand(4, -1, -1, -1), [0, 1, 2, 3], shared_forward=True)
    for u in range(4):
        r, c = _argmax(act, 0, u)
        if act[0, u, r, c] > 0:
            _assert_close(rec[u], _captum(model, "4", "deconvnet", x, (u, r, c)) * act[0, u, r, c])


def test_shared_forward_chosen_by_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = _Cone.run

    def spy(self: _Cone, images: torch.Tensor, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(images.shape[0])
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(_Cone, "run", spy)
    model = _tiny_cnn()
    image = _images(1, 40, 40)
    layers = ["1", "4", "6"] * 4
    reconstruct(model, layers, image.expand(12, -1, -1, -1), [0, 1, 2] * 4)
    assert calls == [1], "one image, 12 units of deep layers: one forward"
    reconstruct(model, layers, image.repeat(12, 1, 1, 1), [0, 1, 2] * 4)
    assert calls == [1, 1], "equal copies count as one image"
    reconstruct(model, "6", _images(12, 40, 40), list(range(5)) * 2 + [0, 1])
    assert calls == [1, 1], "nothing shared: the crop path"
    reconstruct(model, "1", image.expand(3, -1, -1, -1), [0, 1, 2])
    assert calls == [1, 1], "a few units of the first layer: crops are cheaper than a forward"


def test_shared_forward_falls_back_for_unsupported_modules() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.LeakyReLU(), nn.Conv2d(4, 4, 3), nn.ReLU()).eval()
    x = _images(1, 12, 13)
    planner = _Planner(model, crop=True)
    assert _Cone.create(model, [planner.plan("3", False, x)], "deconvnet") is None
    rec = reconstruct(model, "3", x.expand(2, -1, -1, -1), [1, 2], shared_forward=True)
    torch.testing.assert_close(
        rec, reconstruct(model, "3", x.expand(2, -1, -1, -1), [1, 2], shared_forward=False)
    )


def test_shared_forward_leaves_the_model_as_it_was() -> None:
    model = _odd_chain().double()
    x = _images(1, 20, 21).double()
    expected = reconstruct(
        model, "10", x.expand(2, -1, -1, -1), [0, 1], method="guided", shared_forward=False
    )
    with torch.inference_mode():
        inside = x.clone()
        got = reconstruct(
            model, "10", inside.expand(2, -1, -1, -1), [0, 1], method="guided", shared_forward=True
        )
    _assert_same(got, expected)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
        assert "forward" not in m.__dict__
    assert model[6].inplace


# --- ReLU rules -----------------------------------------------------------------------------------


def _sign_net() -> nn.Sequential:
    """x -> (x, -x) -> ReLU -> sum: for x > 0 the second ReLU input is negative in the forward pass."""
    split = nn.Conv2d(1, 2, 1, bias=False)
    merge = nn.Conv2d(2, 1, 1, bias=False)
    with torch.no_grad():
        split.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        merge.weight.fill_(1.0)
    return nn.Sequential(split, nn.ReLU(), merge).eval()


def test_deconvnet_passes_signal_through_forward_negative_relu() -> None:
    model = _sign_net()
    x = torch.full((1, 1, 1, 1), 2.0)
    # seed = activation value 2. gradient/guided: only the x branch is open -> 2.
    # deconvnet: relu(signal) on both branches, whatever the forward sign -> 2 * 1 + 2 * (-1) = 0.
    assert float(reconstruct(model, "2", x, [0], method="gradient")) == 2.0
    assert float(reconstruct(model, "2", x, [0], method="guided")) == 2.0
    assert float(reconstruct(model, "2", x, [0], method="deconvnet")) == 0.0


def test_functional_relu_raises_for_deconvnet_and_guided() -> None:
    torch.manual_seed(0)
    model = _FunctionalRelu().eval()
    x = _images(1, 10, 12)
    for method in ("deconvnet", "guided"):
        with pytest.raises(
            ModelError, match=r"functional ReLU at the model's own forward: .*nn\.ReLU modules"
        ):
            reconstruct(model, "conv3", x, [1], method=method)
    assert model.act.inplace, "inplace flag not restored after the error"
    # before the functional ReLU, and with the plain gradient, all is fine
    reconstruct(model, "conv2", x, [1], method="deconvnet")
    rec = reconstruct(model, "conv3", x, [1], method="gradient")
    act = _activations(model, "conv3", x)
    r, c = _argmax(act, 0, 1)
    _assert_close(rec[0], _captum(model, "conv3", "gradient", x, (1, r, c)) * act[0, 1, r, c])


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def test_functional_relu_error_names_the_module() -> None:
    model = nn.Sequential(_Block(), nn.Conv2d(3, 2, 1)).eval()
    with pytest.raises(ModelError, match=r"functional ReLU at module '0' \(_Block\.forward\)"):
        reconstruct(model, "1", _images(1, 8, 9), [0], method="guided")


def test_works_under_inference_mode() -> None:
    model = _tiny_cnn()
    x = _images(2, 20, 21)
    expected = reconstruct(model, "6", x, [0, 1])
    with torch.inference_mode():
        inside = x.clone()  # an inference tensor
        torch.testing.assert_close(reconstruct(model, "6", inside, [0, 1]), expected)


def test_hooks_and_flags_are_removed() -> None:
    model = _tiny_cnn()
    reconstruct(model, "6", _images(1, 20, 20), [0], method="guided")
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert model[4].inplace
    assert model[0].padding == (2, 2) and model[2].padding == 0


# --- errors ---------------------------------------------------------------------------------------


def test_bad_layer_and_unit() -> None:
    model = _tiny_cnn()
    x = _images(1, 20, 20)
    with pytest.raises(ModelError, match="no module 'conv9'.*valid module paths: 0, 1"):
        reconstruct(model, "conv9", x, [0])
    with pytest.raises(ModelError, match="unit out of range"):
        reconstruct(model, "6", x, [5])
    with pytest.raises(ModelError, match="outside layer"):
        reconstruct(model, "6", x, [0], [(0, 99)])


# --- reconstruct_topk -----------------------------------------------------------------------------


def _loaded(model: nn.Module, size: int) -> LoadedModel:
    rfs = receptive_fields(model, size)
    shapes: dict[str, tuple[int, ...]] = {}
    named = dict(model.named_modules())
    handles = [
        m.register_forward_hook(lambda _m, _a, o, p=p: shapes.__setitem__(p, tuple(o.shape[1:])))
        for p, m in named.items()
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    layers = []
    for name, path, kind in [
        ("conv1", "features.1", "conv"),
        ("conv3", "features.6", "conv"),
        ("fc1", "relu", "linear"),
        ("prob", "", "prob"),
    ]:
        rf = rfs[path]
        shape = shapes[path]
        layers.append(LayerInfo(name, path, kind, shape, shape[0], rf.size, rf.stride, rf.offset))
    return LoadedModel(
        module=model,
        arch="tiny",
        num_classes=3,
        input_size=size,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        layers=tuple(layers),
        params=sum(p.numel() for p in model.parameters()),
    )


class _TopK:
    def __init__(self, images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        self.images, self.rows, self.cols = images, rows, cols
        self.values = np.zeros(images.shape, dtype=np.float32)


def test_reconstruct_topk_tiles_match_reconstruct() -> None:
    torch.manual_seed(0)
    model = _TinyClassifier().eval()
    loaded = _loaded(model, 32)
    probe = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    info = loaded.layer("conv3")
    images = np.array([[0, 3, -1], [5, 1, 2]])
    rows = np.array([[0, 3, -1], [6, 2, 4]], dtype=np.int32)  # the map is 7x7
    cols = np.array([[1, 6, -1], [6, 0, 3]], dtype=np.int32)
    tiles = reconstruct_topk(
        loaded, lambda i: probe[i], info, _TopK(images, rows, cols), [1, 0], method="deconvnet", image_size=32
    )
    cell = _crop.cell_size(info.rf_size)
    assert tiles.shape == (2, 3, cell, cell, 3) and tiles.dtype == np.uint8
    assert (tiles[1, 2] == 128).all(), "an empty slot is mid-grey"
    # unit 1's rank-1 tile == the reconstruction of image 5 at (6, 6), cut to its box
    x = loaded.normalize(probe[5:6])
    rec = reconstruct(loaded, "conv3", x, [1], [(6, 6)])[0].numpy()
    top, left, bottom, right = unit_box(RF(info.rf_size, info.rf_stride, info.rf_offset), 6, 6)
    canvas = np.zeros((3, bottom - top, right - left), dtype=np.float32)
    canvas[:, max(-top, 0) : 32 - top, max(-left, 0) : 32 - left] = rec[:, max(top, 0) :, max(left, 0) :]
    expected = display_cell(torch.from_numpy(canvas), cell)
    assert np.abs(tiles[0, 0].astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("layer", ["fc1", "prob"])
def test_reconstruct_topk_linear_layer(monkeypatch: pytest.MonkeyPatch, layer: str) -> None:
    """Whole-image tiles, image block by image block (2 images a block here): == reconstruct, shown."""
    from sitegen.analyses.reconstruct import _topk

    monkeypatch.setattr(_topk, "_IMAGE_BLOCK", 2)  # read there, by reconstruct_topk
    torch.manual_seed(0)
    model = _TinyClassifier().eval()
    loaded = _loaded(model, 32)
    probe = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    info = loaded.layer(layer)
    images = np.array([[0, 1, 4], [4, 0, -1], [2, 0, 1], [1, 4, 3]])
    zeros = np.zeros(images.shape, dtype=np.int32)
    calls: list[tuple[int, int]] = []
    units = [3, 0, 2] if layer == "fc1" else [2, 0, 1]
    tiles = reconstruct_topk(
        loaded,
        lambda i: probe[i],
        info,
        _TopK(images, zeros, zeros),
        units,
        method="guided",
        image_size=32,
        batch_size=2,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert tiles.shape == (3, 3, 32, 32, 3)
    total = int((images[units] >= 0).sum())
    assert calls[-1] == (total, total) and all(t == total for _, t in calls)
    assert [d for d, _ in calls] == sorted({d for d, _ in calls}), "progress only goes forward"
    live = 0
    for j, u in enumerate(units):
        for r in range(3):
            i = int(images[u, r])
            if i < 0:
                assert (tiles[j, r] == 128).all()
                continue
            rec = reconstruct(loaded, layer, loaded.normalize(probe[i : i + 1]), [u], method="guided")[0]
            live += float(rec.abs().max()) > 0  # a dead fc1 unit (ReLU zero) is all grey
            expected = display_cell(rec, 32)
            assert np.abs(tiles[j, r].astype(int) - expected.astype(int)).max() <= 1
    assert live * 2 > total


def test_to_display_is_symmetric_around_grey() -> None:
    rec = np.zeros((3, 2, 2), dtype=np.float32)
    rec[0, 0, 0], rec[1, 1, 1] = 4.0, -2.0
    out = to_display(rec)
    assert out.shape == (2, 2, 3)
    assert out[0, 0, 0] == 255 and out[1, 1, 1] == 64 and out[0, 1, 2] == 128


@pytest.mark.parametrize("layer", ["conv3", "fc1"])
def test_wide_layers_keep_their_tiles_in_a_file(monkeypatch: pytest.MonkeyPatch, layer: str) -> None:
    """Past TILES_IN_RAM the tiles go to a TileFile: same tiles unit by unit, empty slots grey."""
    from sitegen.analyses.reconstruct import _topk

    torch.manual_seed(0)
    loaded = _loaded(_TinyClassifier().eval(), 32)
    probe = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    info = loaded.layer(layer)
    images = np.array([[0, 3, -1], [5, 1, 2], [2, 2, 4]])
    rows = np.array([[0, 3, -1], [6, 2, 4], [1, 1, 1]], dtype=np.int32)
    if layer == "fc1":
        rows = np.zeros_like(rows)
    topk = _TopK(images, rows, rows.copy())

    def run():
        return reconstruct_topk(loaded, lambda i: probe[i], info, topk, [2, 0, 1], image_size=32)

    in_ram = run()
    monkeypatch.setattr(_topk, "TILES_IN_RAM", 1)  # read there, by reconstruct_topk
    in_file = run()
    assert isinstance(in_file, TileFile) and len(in_file) == 3
    for j in range(3):
        np.testing.assert_array_equal(in_file[j], in_ram[j])
    assert (in_file[1][2] == 128).all(), "an empty slot reads back mid-grey"
