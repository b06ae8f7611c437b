"""Per-unit weights for diffs: the producing module of each layer, flattened per unit."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sitegen.analyses.weights import unit_weights
from sitegen.models import LayerInfo


def info(name: str, module: str, kind: str, units: int) -> LayerInfo:
    return LayerInfo(name, module, kind, (units,), units, 1, 1, 0.0)


def test_producer_before_relu_and_skips() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(36, 5), nn.ReLU(), nn.Linear(5, 2)
    )
    layers = [
        info("conv1", "1", "conv", 4),
        info("fc6", "4", "linear", 5),
        info("fc7", "5", "linear", 2),
        info("prob", "", "prob", 2),
    ]
    w = unit_weights(net, layers)
    assert list(w) == ["conv1", "fc6", "fc7"]
    assert w["conv1"].shape == (4, 27) and w["conv1"].dtype == np.float16
    np.testing.assert_allclose(w["conv1"], net[0].weight.detach().reshape(4, -1).numpy(), atol=1e-3)
    np.testing.assert_allclose(w["fc7"], net[5].weight.detach().numpy(), atol=1e-3)
    assert set(unit_weights(net, layers, max_elements=100)) == {"fc7"}  # 10 weights; conv1 108, fc6 180


def test_width_mismatch_is_skipped() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert unit_weights(net, [info("conv1", "1", "conv", 5)]) == {}
