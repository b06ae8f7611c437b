"""Receptive fields: literature values, exact boxes, and an empirical check by input gradients."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from sitegen.errors import ModelError
from sitegen.models import build_model, layer_table
from sitegen.receptive_field import RF, clip_box, receptive_fields, unit_box


def meta(name: str) -> nn.Module:
    """A torchvision model without memory or init cost: geometry needs shapes only."""
    with torch.device("meta"):
        return torchvision.models.get_model(name)


def sizes(model: nn.Module, input_size: int) -> dict[str, int]:
    return {layer.name: layer.rf_size for layer in layer_table(model, input_size)}


# --- literature values -------------------------------------------------------------------------------


def test_alexnet_matches_the_literature() -> None:
    rf = sizes(meta("alexnet"), 224)
    assert [rf[f"conv{i}"] for i in range(1, 6)] == [11, 51, 99, 131, 163]
    assert rf["fc6"] == rf["prob"] == 224


def test_alexnet_strides_and_offsets() -> None:
    rf = receptive_fields(meta("alexnet"), 224)
    assert rf["features.1"] == RF(11, 4, 3.0)  # 11x11 stride 4, padding 2: unit 0 reads pixels -2..8
    assert rf["features.11"] == RF(163, 16, 15.0)
    assert rf["features.12"] == RF(195, 32, 31.0)  # pool5
    assert rf[""] == RF(224, 224, 111.5)


def test_vgg19_matches_the_literature() -> None:
    rf = sizes(meta("vgg19"), 224)
    assert (rf["conv1_1"], rf["conv2_1"], rf["conv3_1"], rf["conv4_1"], rf["conv5_1"]) == (3, 10, 24, 68, 156)
    assert rf["conv4_4"] == 116
    assert rf["conv5_4"] == 252


def test_vgg16_matches_the_literature() -> None:
    model = meta("vgg16")
    rf = sizes(model, 224)
    assert (rf["conv1_2"], rf["conv2_2"], rf["conv3_3"], rf["conv4_3"], rf["conv5_3"]) == (5, 14, 40, 92, 196)
    fields = receptive_fields(model, 224)
    assert fields["features.30"] == RF(212, 32, 15.5)  # pool5; even size -> half-pixel centre
    assert fields["avgpool"] == fields["features.30"]  # AdaptiveAvgPool2d 7x7 -> 7x7 is the identity


def test_resnet18_stages() -> None:
    rf = receptive_fields(meta("resnet18"), 224)
    got = {k: (rf[k].size, rf[k].stride) for k in ("relu", "maxpool", "layer1", "layer2", "layer3", "layer4")}
    assert got == {
        "relu": (7, 2),
        "maxpool": (11, 4),
        "layer1": (43, 4),
        "layer2": (99, 8),
        "layer3": (211, 16),
        "layer4": (435, 32),
    }
    assert rf["layer4.0.downsample"].size == 211  # the 1x1 shortcut sees less than the block
    assert rf["avgpool"] == rf["fc"] == RF(224, 224, 111.5)  # global pooling: the whole input


@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("zoo:alexnet_small", {"conv1": 5, "conv2": 25, "conv3": 49, "conv4": 65, "conv5": 81, "fc6": 64}),
        ("zoo:vgg_small", {"conv1_1": 3, "conv2_1": 10, "conv3_2": 32, "conv4_2": 68, "conv5_2": 140}),
        (
            "zoo:resnet_small",
            {"conv1": 5, "layer1": 21, "layer2": 49, "layer3": 105, "layer4": 217, "fc": 64},
        ),
    ],
)
def test_zoo_nets(arch: str, expected: dict[str, int]) -> None:
    with torch.device("meta"):
        model = build_model(arch, 10)
    rf = sizes(model, 64)
    assert {k: rf[k] for k in expected} == expected


def test_uneven_adaptive_pool_is_the_whole_input() -> None:
    with torch.device("meta"):
        model = build_model("zoo:alexnet_small", 10)
    rf = receptive_fields(model, 128)  # pool5 is 7x7 at 128 px, AdaptiveAvgPool2d asks 3x3: uneven bins
    assert rf["avgpool"] == RF(128, 128, 63.5)
    assert rf["features.12"] == RF(97, 16, 14.0)


# --- boxes -------------------------------------------------------------------------------------------


def test_unit_box_odd_size() -> None:
    conv1 = RF(11, 4, 3.0)
    assert unit_box(conv1, 0, 0) == (-2, -2, 9, 9)
    assert unit_box(conv1, 1, 2) == (2, 6, 13, 17)
    assert unit_box(conv1, 54, 54) == (214, 214, 225, 225)


def test_unit_box_even_size() -> None:
    conv2_1 = RF(10, 2, 0.5)  # VGG conv2_1: unit 0 reads pixels -4..5
    assert unit_box(conv2_1, 0, 0) == (-4, -4, 6, 6)
    assert unit_box(conv2_1, 3, 1) == (2, -2, 12, 8)


def test_clip_box_at_the_borders() -> None:
    assert clip_box((-2, -2, 9, 9), 224) == (0, 0, 9, 9)
    assert clip_box((214, 214, 225, 225), 224) == (214, 214, 224, 224)
    assert clip_box((-5, 40, 20, 70), (16, 64)) == (0, 40, 16, 64)  # (rows, cols)
    assert clip_box((3, 4, 5, 6), 10) == (3, 4, 5, 6)


def test_unit_box_outside_the_image_is_refused() -> None:
    conv1 = RF(11, 4, 3.0)
    assert unit_box(conv1, 54, 54, 224) == (214, 214, 225, 225)
    with pytest.raises(ValueError, match="outside"):
        unit_box(conv1, 60, 0, 224)


def test_whole_input_box() -> None:
    fc = RF(64, 64, 31.5)
    assert unit_box(fc, 0, 0) == (0, 0, 64, 64)


# --- empirical: the gradient of a unit is zero outside its box, and reaches the box's edges -----------


def _positive(model: nn.Module) -> nn.Module:
    """Double precision, positive weights and average instead of max pooling (same geometry).

    With a positive input every path then carries a positive gradient, so the input pixels with a
    non-zero gradient are exactly the ones that can influence the unit (max-pooling would route the
    gradient to one pixel per window and hide the rest).
    """
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.MaxPool2d):
            avg = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, avg)
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(0.01)
    return model.double().eval()


class _Stop(Exception):
    """Raised by a hook to end the forward at the layer under test."""


def _gradient_bboxes(model: nn.Module, path: str, positions: list[tuple[int, int]], size: int) -> list[tuple]:
    """Bounding box of the input pixels with a non-zero gradient, one unit per batch element."""
    captured = {}

    def stop(m: nn.Module, args: object, out: torch.Tensor) -> None:
        captured["out"] = out
        raise _Stop

    handle = model.get_submodule(path).register_forward_hook(stop)
    x = torch.ones(len(positions), 3, size, size, dtype=torch.float64, requires_grad=True)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    out = captured["out"]
    sum(out[i, 0, row, col] for i, (row, col) in enumerate(positions)).backward()
    boxes = []
    for grad in x.grad:
        rows, cols = (grad.abs().sum(0) > 0).nonzero(as_tuple=True)
        boxes.append((int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1))
    return boxes


def _check(model: nn.Module, size: int, units: dict[str, list[tuple[int, int]]]) -> None:
    model = _positive(model)
    rf = receptive_fields(model, size)
    for path, positions in units.items():
        for (row, col), got in zip(positions, _gradient_bboxes(model, path, positions, size), strict=True):
            top, left, bottom, right = clip_box(unit_box(rf[path], row, col), size)
            g_top, g_left, g_bottom, g_right = got
            assert (g_top, g_left) == (top, left), (path, row, col, rf[path])
            # a floor-mode stride may drop the last row/col of a map, so pixels at the image's
            # bottom/right edge can lie in the box yet never be read: there, inside is enough
            assert g_bottom == bottom if bottom < size else g_bottom <= bottom, (path, row, col, rf[path])
            assert g_right == right if right < size else g_right <= right, (path, row, col, rf[path])


def test_empirical_alexnet() -> None:
    torch.manual_seed(0)
    features = meta("alexnet").features.to_empty(device="cpu")  # conv1..pool5; skip the 58 M fc weights
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            m.reset_parameters()
    # 127 px: conv1 31x31, conv2 15x15, conv5 7x7
    _check(features, 127, {"1": [(0, 0), (7, 12), (30, 30)], "4": [(0, 0), (5, 9), (14, 14)], "11": [(3, 3)]})


def test_empirical_resnet18() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=2)
    # 96 px: layer1 24x24 (RF 43), layer2 12x12 (RF 99: bigger than the image)
    _check(model, 96, {"relu": [(0, 0), (47, 20)], "layer1": [(0, 0), (10, 17)], "layer2": [(6, 6)]})


@pytest.mark.parametrize(
    ("arch", "units"),
    [
        ("zoo:alexnet_small", {"features.4": [(0, 0), (7, 3)], "features.11": [(0, 0), (6, 6)]}),
        ("zoo:vgg_small", {"features.9": [(0, 0), (17, 30)], "features.26": [(4, 7)]}),
        ("zoo:resnet_small", {"relu": [(0, 0), (31, 5)], "layer2": [(0, 0), (9, 13)], "layer3.1": [(4, 5)]}),
    ],
)
def test_empirical_zoo(arch: str, units: dict[str, list[tuple[int, int]]]) -> None:
    torch.manual_seed(0)
    _check(build_model(arch, 3), 64, units)


class Branchy(nn.Module):
    """Even kernels, dilation, functional pooling and padding, an Inception-style cat, an SE gate."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 2, stride=2)  # even kernel: even RF, half-pixel centres
        self.a = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.b = nn.Conv2d(4, 4, 1)
        self.head = nn.Conv2d(8, 4, (1, 3), padding=(0, 1))  # non-square
        self.gate = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        x = F.avg_pool2d(x, 3, stride=1, padding=1)
        x = F.pad(x, (1, 0, 1, 0))
        x = torch.cat([self.a(x), self.b(x)], dim=1)
        x = self.head(x)
        return x * torch.sigmoid(self.gate(F.adaptive_avg_pool2d(x, 1)))


def test_branches_even_kernels_and_functional_ops() -> None:
    rf = receptive_fields(Branchy(), 32)
    assert rf["stem"] == RF(2, 2, 0.5)
    assert rf["a"] == RF(14, 2, -1.5)  # pool 3 (+4), dilated 3x3 (+8); F.pad shifts by one unit
    assert rf["b"] == RF(6, 2, -1.5)
    assert rf["head"] == RF(18, 2, -1.5)  # cat = union of a and b; (1, 3) kernel: cols grow, rows don't
    assert rf[""] == rf["head"]  # the 1x1 squeeze-and-excitation gate is ignored


def test_functional_max_pool() -> None:
    class Pool(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(torch.relu(x), 3, stride=2, padding=1)

    assert receptive_fields(Pool(), 16)[""] == RF(3, 2, 0.0)


def test_empirical_branches() -> None:
    torch.manual_seed(0)
    # the SE gate's global influence is deliberately ignored: check the layers before it
    _check(Branchy(), 32, {"a": [(0, 0), (5, 9)], "b": [(16, 16)]})


def test_module_called_twice_keeps_its_last_call() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    assert receptive_fields(Twice(), 16)["conv"] == RF(5, 1, 0.0)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 2
        return self.fc(x.mean((2, 3)))


def test_untraceable_model() -> None:
    with pytest.raises(ModelError, match="torch.fx cannot trace Untraceable"):
        receptive_fields(Untraceable(), 16)


def test_untraceable_model_layer_table_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        table = layer_table(Untraceable(), 16, ["conv", "fc"])
    # module paths that have a friendly name get it
    assert [(layer.name, layer.rf_size, layer.rf_stride) for layer in table] == [
        ("conv1", 16, 16),
        ("fc2", 16, 16),
    ]
    assert "whole input" in caplog.text


def test_mode_is_restored() -> None:
    model = build_model("zoo:resnet_small", 2).train()
    receptive_fields(model, 32)
    assert model.training
