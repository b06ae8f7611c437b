"""Grad-CAM against captum, CAM against Grad-CAM, and the atlas entry ``run_gradcam``."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torchvision
from captum.attr import LayerGradCam
from torch import nn

from sitegen.analyses.gradcam import cam, default_layer, gradcam, run_gradcam
from sitegen.errors import ModelError
from sitegen.models.types import LayerInfo, LoadedModel


def _tiny_net() -> nn.Sequential:
    """conv-relu-pool-conv-relu, global average pool, one linear: CAM applies (module "4" is the last map)."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    ).eval()


U32 = float(np.finfo(np.float32).eps) / 2  # float32 unit roundoff, 2**-24
TINY_REDUCTIONS = (27, 54, 30, 8)  # terms per output: conv1 3*3*3, conv2 6*3*3, 6x5 average, linear


def f32_tol(scale: float, *reductions: int) -> float:
    """How far a float32 result may sit from its float64 value (issue 11).

    Per layer, a sum of n products errs by about sqrt(n) units of roundoff of the values' scale
    (Higham & Mary 2019, probabilistic bound); 8x that for headroom. It follows the values and the
    reductions, not one torch build's rounding; a wrong class, layer or weight is off by far more.
    """
    return 8 * sum(math.sqrt(n) for n in reductions) * U32 * scale


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _captum(model: nn.Module, path: str, x: torch.Tensor, classes: list[int]) -> torch.Tensor:
    module = dict(model.named_modules())[path]
    return LayerGradCam(model, module).attribute(x, target=classes, relu_attributions=True)[:, 0]


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(3, 3, 12, 10)  # non-square


def test_gradcam_equals_captum_on_tiny_net(images: torch.Tensor) -> None:
    # two implementations, two summation orders: compared in float64, where the order costs ~1e-16
    torch.manual_seed(1)
    net = _tiny_net().double()
    classes = [0, 3, 4]
    for path in ("1", "4"):
        ours = gradcam(net, path, images.double(), classes)
        ref = _captum(net, path, images.double(), classes)
        assert ours.shape == ref.shape and ours.dtype == torch.float64
        assert ref.max() > 0
        assert _rel_err(ours, ref) <= 1e-12


@pytest.mark.parametrize(
    ("arch", "path", "size"),
    # resnet18: a block output followed by a residual +=; alexnet: conv5 after an in-place ReLU
    [("resnet18", "layer3", 48), ("alexnet", "features.11", 64)],
)
def test_gradcam_equals_captum_on_torchvision(arch: str, path: str, size: int) -> None:
    torch.manual_seed(2)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval().double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    ours = gradcam(net, path, x, [3, 7])
    ref = _captum(net, path, x, [3, 7])
    assert ref.max() > 0
    assert _rel_err(ours, ref) <= 1e-10  # float64: ~1e-16 per operation, deep nets included
    # the model is left as it was: no hooks, no gradients on the weights
    assert not any(m._forward_hooks for m in net.modules())
    assert all(p.grad is None for p in net.parameters())


def test_cam_is_gradcam_up_to_positive_scale(images: torch.Tensor) -> None:
    # Selvaraju et al. 2017 sec. 3.1: for GAP + linear, Grad-CAM weights are w_ck / (h w), so
    # relu(CAM) = h w * Grad-CAM at the pooled layer: a positive scale, the same for every image
    torch.manual_seed(3)
    net = _tiny_net().double()  # two computation paths: float64, so only the algebra can differ
    classes = [1, 2, 4]
    c = cam(net, images.double(), classes)
    g = gradcam(net, "4", images.double(), classes)
    assert c.shape == g.shape == (3, 6, 5)
    assert (c < 0).any()  # CAM is not rectified
    for i in range(3):
        scale = c[i].relu().max() / g[i].max()
        atol = 1e-12 * float(c[i].abs().max())
        torch.testing.assert_close(c[i].relu(), scale * g[i], rtol=1e-12, atol=atol)
        assert scale == pytest.approx(6 * 5, rel=1e-12)


def test_cam_refuses_nets_without_global_pooling_head() -> None:
    x = torch.randn(1, 3, 16, 16)
    alexnet_like = nn.Sequential(  # torchvision alexnet's head: 6x6 average pool, flatten, linear
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(6), nn.Flatten(), nn.Linear(4 * 36, 2)
    ).eval()
    with pytest.raises(ModelError, match="global average pooling followed by one nn.Linear"):
        cam(alexnet_like, x, [0])
    mlp_head = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)
    ).eval()
    with pytest.raises(ModelError, match="CAM needs"):
        cam(mlp_head, x, [0])


def test_gradcam_unknown_layer_lists_valid_paths(images: torch.Tensor) -> None:
    with pytest.raises(ModelError, match="valid module paths"):
        gradcam(_tiny_net(), "conv9", images, [0, 0, 0])
    with pytest.raises(ModelError, match=r"\[B, C, h, w\]"):
        gradcam(_tiny_net(), "7", images, [0, 0, 0])  # the linear layer: no map


def _loaded(net: nn.Module) -> LoadedModel:
    layers = (
        LayerInfo("conv1", "1", "conv", (6, 12, 10), 6, 3, 1, 0.0),
        LayerInfo("conv2", "4", "conv", (8, 6, 5), 8, 8, 2, 0.5),
        LayerInfo("fc", "7", "linear", (5,), 5, 12, 12, 5.5),
        LayerInfo("prob", "", "prob", (5,), 5, 12, 12, 5.5),
    )
    return LoadedModel(net, "tiny", 5, 12, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), layers, 0)


def test_run_gradcam_true_and_predicted_maps() -> None:
    torch.manual_seed(4)
    net = _tiny_net()
    loaded = _loaded(net)
    images = torch.rand(3, 3, 12, 10)
    labels = [2, 0, 4]
    result = run_gradcam(loaded, images, labels, device="cpu", batch_size=2)

    assert default_layer(loaded).name == "conv2"
    assert (result.layer, result.module, result.grid) == ("conv2", "4", (6, 5))
    # run_gradcam computes in float32 (in batches of 2): checked against the float64 truth, within
    # float32 roundoff of the values through the net's reductions (f32_tol)
    net64 = copy.deepcopy(net).double()
    x = loaded.normalize(images).double()
    with torch.no_grad():
        logits = net64(x)
    probs = logits.softmax(dim=1)
    p_tol = 2 * f32_tol(float(logits.abs().max()), *TINY_REDUCTIONS)  # |dp| <= 2 max |d logit|
    top2 = probs.topk(2).values
    assert (top2[:, 0] - top2[:, 1] > 100 * p_tol).all()  # the argmax is well defined at this tolerance
    np.testing.assert_array_equal(result.predicted, probs.argmax(1).numpy())
    np.testing.assert_allclose(result.predicted_prob, probs.max(1).values.numpy(), rtol=0, atol=p_tol)
    np.testing.assert_allclose(result.true_prob, probs[torch.arange(3), labels].numpy(), rtol=0, atol=p_tol)
    np.testing.assert_array_equal(result.labels, labels)
    for maps, peak, classes in (
        (result.true_maps, result.true_peak, labels),
        (result.pred_maps, result.pred_peak, result.predicted.tolist()),
    ):
        assert maps.shape == (3, 12, 10) and maps.dtype == np.float32
        want = gradcam(net64, "4", x, classes).flatten(1).amax(1).numpy()
        np.testing.assert_allclose(peak, want, rtol=0, atol=f32_tol(float(want.max()), *TINY_REDUCTIONS))
        for m, p in zip(maps, peak, strict=True):
            if p > 0:
                assert m.min() == 0.0 and m.max() == pytest.approx(1.0)
            else:
                assert not m.any()
    # a named layer, and the same answers one image at a time
    single = run_gradcam(loaded, images[:1], labels[:1], layer="conv1")
    assert single.grid == (12, 10) and single.layer == "conv1"
    with pytest.raises(ModelError, match="no layer 'conv7'"):
        run_gradcam(loaded, images, labels, layer="conv7")
