"""Feature visualization by optimization (sitegen.analyses.featvis) on a tiny seeded CNN."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from sitegen.analyses.featvis import FeatVis, featvis
from sitegen.errors import ModelError
from sitegen.models._api import LayerInfo, LoadedModel

SIZE = 24


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # tiny batches: a second OpenMP thread only adds barrier waits on a shared 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_model(train: bool = False) -> LoadedModel:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(inplace=True),  # in-place, as in torchvision: must be left in-place afterwards
        nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(24, 5),
        nn.ReLU(),
        nn.Linear(5, 3),
    )
    net.train(train)
    layers = (
        LayerInfo("conv1", "1", "conv", (6, SIZE, SIZE), 6, 3, 1, 0.0),
        LayerInfo("conv2", "4", "conv", (6, SIZE // 2, SIZE // 2), 6, 8, 2, 0.5),
        LayerInfo("fc6", "8", "linear", (5,), 5, SIZE, SIZE, 0.0),
        LayerInfo("prob", "", "prob", (3,), 3, SIZE, SIZE, 0.0),
    )
    params = sum(p.numel() for p in net.parameters())
    return LoadedModel(net, "tiny", 3, SIZE, (0.9, 0.9, 0.9), (0.3, 0.3, 0.3), layers, params)


def sequential(model: LoadedModel) -> nn.Sequential:
    assert isinstance(model.module, nn.Sequential)
    return model.module


def doodle_like(n: int = 64, seed: int = 0) -> torch.Tensor:
    """White RGB images in [0, 1] with one to three dark strokes (rows, columns, diagonals)."""
    rng = np.random.default_rng(seed)
    x = np.ones((n, SIZE, SIZE), np.float32)
    idx = np.arange(SIZE)
    for img in x:
        for _ in range(rng.integers(1, 4)):
            kind, at = rng.integers(0, 3), rng.integers(0, SIZE)
            if kind == 0:
                img[at, :] = 0.0
            elif kind == 1:
                img[:, at] = 0.0
            else:
                img[idx, (idx + at) % SIZE] = 0.0
    return torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1)


def dataset_max(model: LoadedModel, layer: str) -> np.ndarray:
    """Each unit's largest mean activation (conv) / activation (linear) over the doodle-like set."""
    info = model.layer(layer)
    module = dict(model.module.named_modules())[info.module]
    got: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, out: got.append(out.clone()))
    try:
        with torch.no_grad():
            model.module(model.normalize(doodle_like()))
    finally:
        handle.remove()
    act = got[0].flatten(2).mean(2) if got[0].dim() > 2 else got[0]
    return act.amax(0).numpy()


@pytest.mark.parametrize("layer", ["conv2", "fc6"])
def test_optimized_image_beats_the_dataset_and_its_start(layer: str) -> None:
    model = make_model()
    best = dataset_max(model, layer)
    vis = featvis(model, layer, None, steps=96, lr=0.1, seed=0, transforms=False)
    assert isinstance(vis, FeatVis)
    assert np.all(vis.objective > 2 * best), (vis.objective, best)
    assert np.all(vis.objective > vis.start_objective)
    # with the random transforms (the default) the image must work under jitter: lower, still above
    robust = featvis(model, layer, None, steps=96, lr=0.1, seed=0)
    assert np.all(robust.objective > best)
    assert np.all(robust.objective > robust.start_objective)


def test_pixel_parametrization_with_regularizers_raises_the_objective() -> None:
    model = make_model()
    vis = featvis(model, "conv2", [0, 1, 2], steps=48, lr=0.1, seed=1, param="pixel", tv=0.05, l2=0.05)
    assert np.all(vis.objective > vis.start_objective)


def test_result_shapes_and_metadata() -> None:
    model = make_model()
    vis = featvis(model, model.layer("conv1"), [5, 2], size=20, steps=2, seed=3)
    assert vis.layer == "conv1"
    assert vis.units.dtype == np.int64 and vis.units.tolist() == [5, 2]
    assert vis.images.dtype == np.uint8 and vis.images.shape == (2, 20, 20, 3)
    assert vis.objective.dtype == np.float32 and vis.objective.shape == (2,)
    assert vis.start_objective.dtype == np.float32 and vis.start_objective.shape == (2,)
    assert (vis.size, vis.steps, vis.seed, vis.param) == (20, 2, 3, "fourier")
    assert vis.decorrelate and vis.transforms and not vis.grayscale


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_grayscale_images_have_equal_channels(param: str) -> None:
    vis = featvis(make_model(), "conv2", [0, 3], steps=8, lr=0.1, param=param, grayscale=True)
    assert vis.grayscale
    assert np.array_equal(vis.images[..., 0], vis.images[..., 1])
    assert np.array_equal(vis.images[..., 0], vis.images[..., 2])
    assert np.all(vis.objective > vis.start_objective)


@pytest.mark.parametrize("param", ["fourier", "pixel"])
def test_batched_equals_one_at_a_time(param: str) -> None:
    model = make_model()

    def run(units: list[int] | None, batch_units: int) -> FeatVis:
        return featvis(
            model,
            "conv2",
            units,
            steps=12,
            lr=0.1,
            seed=7,
            param=param,
            tv=0.01,
            l2=0.01,
            batch_units=batch_units,
        )

    together = run(None, 6)
    units = [4, 0, 2]
    alone = run(units, 1)
    np.testing.assert_allclose(alone.objective, together.objective[units], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(alone.start_objective, together.start_objective[units], rtol=1e-4, atol=1e-5)
    diff = np.abs(alone.images.astype(int) - together.images[units].astype(int))
    assert diff.max() <= 1  # float rounding of batched convolutions may flip a uint8 step


def test_deterministic_given_seed() -> None:
    model = make_model()
    a = featvis(model, "conv1", [0, 3], steps=6, seed=11)
    b = featvis(model, "conv1", [0, 3], steps=6, seed=11)
    c = featvis(model, "conv1", [0, 3], steps=6, seed=12)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.objective, b.objective)
    assert not np.array_equal(a.images, c.images)


def test_model_is_left_as_found_even_on_error() -> None:
    model = make_model(train=True)
    net = sequential(model)
    net[0].weight.requires_grad_(False)  # a mix of flags, to be restored one by one
    flags = [p.requires_grad for p in net.parameters()]
    before = [p.detach().clone() for p in net.parameters()]

    featvis(model, "conv2", [1], steps=3)

    def stop(done: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        featvis(model, "fc6", [0, 1], steps=2, batch_units=1, progress=stop)
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before, strict=True))
    assert all(p.grad is None for p in net.parameters())
    assert net.training
    assert net[1].inplace and not net[4].inplace
    assert not net[1]._forward_hooks and not net[4]._forward_hooks and not net[8]._forward_hooks


def test_linear_and_prob_units() -> None:
    model = make_model()
    vis = featvis(model, "prob", [0, 1, 2], steps=24, lr=0.1, seed=0)
    assert vis.images.shape == (3, SIZE, SIZE, 3)
    # prob units are optimized as logits: they rise from the start
    assert np.all(vis.objective > vis.start_objective)


def test_dead_unit_comes_alive() -> None:
    # a bias that keeps conv1 unit 0 negative on the grey start image: the plain ReLU gradient is zero,
    # Lucid's redirected ReLU gradient lets the optimization start anyway
    model = make_model()
    conv = sequential(model)[0]
    assert isinstance(conv, nn.Conv2d) and conv.bias is not None
    with torch.no_grad():
        conv.bias[0] = -1.5
    vis = featvis(model, "conv1", [0], steps=48, lr=0.1, seed=0, transforms=False)
    assert vis.start_objective[0] == 0.0
    assert vis.objective[0] > 0.0


def test_bad_layer_or_unit_is_a_model_error() -> None:
    model = make_model()
    with pytest.raises(ModelError, match="valid layers: conv1, conv2, fc6, prob"):
        featvis(model, "conv9", [0], steps=1)
    with pytest.raises(ModelError, match="units 0..5"):
        featvis(model, "conv2", [6], steps=1)
