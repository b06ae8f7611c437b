"""Feature visualization by optimization (sitegen.analyses.featvis) on a tiny seeded CNN."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch
from torch import nn

from sitegen.analyses._hooks import get_module, truncated
from sitegen.analyses.featvis import FeatVis, featvis
from sitegen.analyses.featvis._grad import _conv_channel, _fast_max_pools, _OwnChannel
from sitegen.analyses.featvis._optim import _Adam
from sitegen.errors import ModelError
from sitegen.models.types import LayerInfo, LoadedModel

SIZE = 24


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # tiny batches: a second OpenMP thread only adds barrier waits on a shared 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


U32 = float(np.finfo(np.float32).eps) / 2  # float32 unit roundoff, 2**-24
REDUCTIONS = {"conv1": (27,), "conv2": (27, 54), "conv1_pre": (27,), "conv2_pre": (27, 54)}  # 3*3*3, 6*3*3


def f32_tol(scale: float, reductions: tuple[int, ...], steps: int = 0) -> float:
    """How far two float32 computations of the same value may drift apart (issue 11).

    A forward (or its gradient) through layers summing n_i products errs by about sqrt(n_i) units of
    roundoff of the values' scale (Higham & Mary 2019, probabilistic bound); 8x for headroom. Each
    Adam step carries that difference on, and its division by the gradient's running RMS turns
    roundoff in near-zero gradients into whole steps: 32x the forward bound per step (measured on
    torch 2.14.1: conv1's own-channel path drifted 1262 units of roundoff in 12 steps, 1/13 of this).
    It follows the values, the reductions and the steps, not one torch build's rounding; another
    unit, or the optimization itself, moves the objective by far more (asserted where used).
    """
    return 8 * sum(math.sqrt(n) for n in reductions) * U32 * scale * (1 + 32 * steps)


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
    scale = float(np.abs(together.objective).max())
    tol = f32_tol(scale, REDUCTIONS["conv2"], steps=12)
    assert np.abs(together.objective[units] - together.objective[[0, 2, 4]]).max() > 10 * tol  # can fail
    np.testing.assert_allclose(alone.objective, together.objective[units], rtol=0, atol=tol)
    start_tol = f32_tol(float(np.abs(together.start_objective).max()), REDUCTIONS["conv2"])
    np.testing.assert_allclose(alone.start_objective, together.start_objective[units], rtol=0, atol=start_tol)
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
    with pytest.raises(RuntimeError, match="stop"):  # the own-channel path: a hook on conv2's conv
        featvis(model, "conv2", [0, 1], steps=2, batch_units=1, progress=stop)
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before, strict=True))
    assert all(p.grad is None for p in net.parameters())
    assert net.training
    assert net[1].inplace and not net[4].inplace
    assert not net[1]._forward_hooks and not net[4]._forward_hooks and not net[8]._forward_hooks
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
    assert not any("forward" in m.__dict__ for m in net.modules())  # the max pool's forward is restored


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


# --- the speed-ups: each exact up to float rounding -------------------------------------------------


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(5, 7, 3, padding=1),
        nn.Conv2d(5, 7, 3, padding=0, bias=False),
        nn.Conv2d(5, 7, (3, 5), padding=(2, 1), dilation=(2, 1)),
        nn.Conv2d(6, 8, 3, padding=1, groups=2),
        nn.Conv2d(5, 7, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(5, 7, 3, padding="same"),
        nn.Conv2d(5, 7, 5, stride=2, padding=2),
        nn.Conv2d(6, 8, 4, stride=(2, 3), padding=1, groups=2),
    ],
    ids=["pad", "nobias", "dilated", "groups", "reflect", "same", "strided", "strided-groups"],
)
def test_own_channel_conv_equals_the_whole_layer(conv: nn.Conv2d) -> None:
    torch.manual_seed(1)
    conv = conv.double()  # two computation paths: in float64 only the algebra can differ
    x = torch.randn(6, conv.in_channels, 11, 13, dtype=torch.float64, requires_grad=True)
    idx = torch.tensor([0, 3, conv.out_channels - 1, 3, 1, 2])
    whole = conv(x)[torch.arange(6), idx]
    own = _conv_channel(conv, x, idx)
    assert own.shape == whole.shape and own.dtype == torch.float64
    torch.testing.assert_close(own, whole, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(whole)
    (want,) = torch.autograd.grad(whole, x, g)
    (got,) = torch.autograd.grad(own, x, g)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def with_conv_layers(model: LoadedModel) -> LoadedModel:
    """The tiny model with its two convs (before their ReLUs) as layers too."""
    extra = (
        LayerInfo("conv1_pre", "0", "conv", (6, SIZE, SIZE), 6, 3, 1, 0.0),
        LayerInfo("conv2_pre", "3", "conv", (6, SIZE // 2, SIZE // 2), 6, 8, 2, 0.5),
    )
    return LoadedModel(
        model.module, "tiny", 3, SIZE, model.mean, model.std, model.layers + extra, model.params
    )


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv2_pre"])
def test_own_channel_path_equals_the_whole_layer_path(layer: str) -> None:
    model = with_conv_layers(make_model())
    fast = featvis(model, layer, None, steps=12, seed=5, tv=0.01)
    whole = featvis(model, layer, None, steps=12, seed=5, tv=0.01, own_channel=False)
    # featvis optimizes in float32 only: within float32 roundoff carried through 12 Adam steps
    start_tol = f32_tol(float(np.abs(whole.start_objective).max()), REDUCTIONS[layer])
    np.testing.assert_allclose(fast.start_objective, whole.start_objective, rtol=0, atol=start_tol)
    tol = f32_tol(float(np.abs(whole.objective).max()), REDUCTIONS[layer], steps=12)
    assert np.abs(whole.objective - whole.start_objective).max() > 10 * tol  # the steps moved it more
    np.testing.assert_allclose(fast.objective, whole.objective, rtol=0, atol=tol)
    assert np.abs(fast.images.astype(int) - whole.images.astype(int)).max() <= 1


class Shared(nn.Module):
    """One conv applied twice: its second call feeds the ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(self.conv(x)))


def shortcut_for(net: nn.Module, path: str, units: list[int]) -> _OwnChannel | None:
    torch.manual_seed(0)
    layer = LayerInfo("l", path, "conv", (3, 8, 8), 3, 3, 1, 0.0)
    loaded = LoadedModel(net.eval(), "t", 3, 8, (0.5,) * 3, (0.2,) * 3, (layer,), 0)
    target = get_module(net, path)
    with truncated(net, target) as forward:
        return _OwnChannel.find(forward, target, loaded, units, 8, torch.device("cpu"))


def test_own_channel_applies_only_where_it_is_exact() -> None:
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    found = shortcut_for(plain, "1", [0, 3])
    assert found is not None and found.conv is plain[0] and found.relu
    found = shortcut_for(plain, "0", [1])
    assert found is not None and found.conv is plain[0] and not found.relu
    # a ReLU fed by something else than the conv's output, a shared conv, a non-conv layer: no shortcut
    assert shortcut_for(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()), "2", [0]) is None
    assert shortcut_for(Shared(), "relu", [0, 1]) is None
    assert shortcut_for(nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2)), "1", [0]) is None


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(3, 2),
        nn.MaxPool2d(2),
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.MaxPool2d((2, 3), (1, 2), dilation=(2, 1)),
    ],
    ids=["3s2", "2", "pad-ceil", "dilated"],
)
def test_max_pool_forward_and_gradient_are_unchanged(pool: nn.MaxPool2d) -> None:
    torch.manual_seed(2)
    # after a ReLU: many zeros, so many windows with ties, where the argmax decides the gradient
    x = torch.randn(4, 5, 13, 12).clamp(min=0).requires_grad_(True)
    want = pool(x)
    g = torch.randn_like(want)
    (want_grad,) = torch.autograd.grad(want, x, g)
    with _fast_max_pools(pool):
        assert "forward" in pool.__dict__
        got = pool(x)
        (got_grad,) = torch.autograd.grad(got, x, g)
    assert "forward" not in pool.__dict__
    assert got.is_contiguous() and got_grad.is_contiguous()
    assert torch.equal(got, want)
    assert torch.equal(got_grad, want_grad)


def _adam_path(p: torch.Tensor, step: Callable[[], object], steps: int = 20) -> torch.Tensor:
    gen = torch.Generator().manual_seed(4)
    for _ in range(steps):
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        step()
    return p.detach()


def test_adam_written_out_equals_torch() -> None:
    """The written-out update against torch.optim.Adam's for-loop form, in float64 (a tight bound)."""
    torch.manual_seed(3)
    start = torch.randn(4, 3, 6, 4, 2, dtype=torch.float64)
    p = start.clone().requires_grad_(True)
    adam = _Adam(p, 0.1, fused=False)
    assert not adam.fused
    got = _adam_path(p, adam.step)
    q = start.clone().requires_grad_(True)
    want = _adam_path(q, torch.optim.Adam([q], lr=0.1, foreach=False).step)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert not torch.equal(got, start)  # it moved


def test_adam_fused_equals_torch() -> None:
    """The fused path (where this torch has it) against torch.optim.Adam's for-loop form, float32."""
    torch.manual_seed(3)
    start = torch.randn(4, 3, 6, 4, 2)
    p = start.clone().requires_grad_(True)
    adam = _Adam(p, 0.1)
    if not adam.fused:
        pytest.skip("this torch has no fused Adam on the CPU")
    got = _adam_path(p, adam.step)
    q = start.clone().requires_grad_(True)
    want = _adam_path(q, torch.optim.Adam([q], lr=0.1, foreach=False).step)
    # float32 rounding of two update orders over 20 steps of at most lr = 0.1: far below the step size
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    assert not torch.equal(got, start)
