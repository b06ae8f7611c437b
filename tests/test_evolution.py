"""Feature evolution: which checkpoints are mined for it, and how its curves are drawn (issue 14, 9)."""

from __future__ import annotations

import pytest

from sitegen.render.charts import stability_curves


@pytest.mark.parametrize(("n", "mode"), [(2, "markers"), (3, "lines+markers"), (5, "lines+markers")])
def test_two_checkpoints_are_points_not_a_trajectory(n: int, mode: str) -> None:
    chart = stability_curves(["conv1", "fc6"], list(range(1, n + 1)), [[1.0] * n, [2.0] * n], 9)
    assert {trace["mode"] for trace in chart["data"]} == {mode}


def test_evolution_names_checkpoints() -> None:
    from sitegen.build.names import _evolution_names
    from sitegen.errors import SpecError
    from sitegen.spec import Spec

    spec = Spec.model_validate(
        {
            "datasets": {"d": {"builtin": "doodles"}},
            "networks": {
                "n": {"arch": "zoo:alexnet_small", "dataset": "d", "evolution": ["epoch-1", "epoch-4"]}
            },
        }
    )
    names = [f"epoch-{i}" for i in range(1, 6)]
    net = spec.networks["n"]
    assert _evolution_names(spec, "n", net, names) == {"epoch-1", "epoch-4"}
    assert _evolution_names(spec, "n", net.model_copy(update={"evolution": True}), names) == set(names)
    assert _evolution_names(spec, "n", net.model_copy(update={"evolution": False}), names) == set()
    with pytest.raises(SpecError, match=r"networks\.n\.evolution: unknown checkpoints \['epoch-9'\]"):
        _evolution_names(spec, "n", net.model_copy(update={"evolution": ["epoch-9"]}), names)


def test_grey_filters_are_the_sum_over_input_channels() -> None:
    import numpy as np
    import torch
    from torch import nn

    from sitegen.analyses.filters import filter_grid

    conv = nn.Conv2d(3, 2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[1.0, 0], [0, 0]], [[0, 2], [0, 0]], [[0, 0], [3, 0]]]] * 2))
        conv.weight[1, 0, 1, 1] = 6.0  # filter 1: a strong red-only corner
    grid = filter_grid(nn.Sequential(conv), grayscale=True, pad=0, min_px=2)
    tile = grid.image[:2, :2]
    assert (tile == tile[..., :1]).all(), "grey filters have equal channels"
    # filter 0 summed over channels: [[1, 2], [3, 0]] -> min-max 0..3
    np.testing.assert_array_equal(tile[..., 0], np.rint(np.array([[1, 2], [3, 0]]) / 3 * 255))
    colour = filter_grid(nn.Sequential(conv), pad=0, min_px=2)
    assert not (colour.image[:2, :2] == colour.image[:2, :2, :1]).all()


def test_checkpoints_without_pages_get_sprites_for_the_evolution_sample_only() -> None:
    """Build and render sample the same evolution units: build's non-atlas sprites cover exactly the
    units the evolution pages show, at any layer width."""
    from types import SimpleNamespace

    from sitegen.build.names import _shown_units
    from sitegen.store.manifest import EVOLUTION_UNITS, evenly_spaced

    net = SimpleNamespace(units={"fc6": 40})
    for name, width in (("conv1", 64), ("conv2", 10), ("fc6", 256)):
        info = SimpleNamespace(name=name, units=width)
        atlas = _shown_units(net, info, 0)
        sampled = _shown_units(net, info, 0, sample=EVOLUTION_UNITS)
        assert sampled == evenly_spaced(atlas, EVOLUTION_UNITS)
        assert len(sampled) == min(EVOLUTION_UNITS, len(atlas)) and set(sampled) <= set(atlas)
    assert evenly_spaced(list(range(64)), 16) == list(range(0, 64, 4))
