"""Feature evolution: which checkpoints are mined for it, and how its curves are drawn (issue 14, 9)."""

from __future__ import annotations

import pytest

from sitegen.render.charts import stability_curves


@pytest.mark.parametrize(("n", "mode"), [(2, "markers"), (3, "lines+markers"), (5, "lines+markers")])
def test_two_checkpoints_are_points_not_a_trajectory(n: int, mode: str) -> None:
    chart = stability_curves(["conv1", "fc6"], list(range(1, n + 1)), [[1.0] * n, [2.0] * n], 9)
    assert {trace["mode"] for trace in chart["data"]} == {mode}


def test_evolution_names_checkpoints() -> None:
    from sitegen.build import _evolution_names
    from sitegen.errors import SpecError
    from sitegen.spec import Spec

    spec = Spec.model_validate(
        {
            "datasets": {"d": {"builtin": "doodles"}},
            "networks": {"n": {"arch": "zoo:alexnet_small", "dataset": "d", "evolution": ["epoch-1", "epoch-4"]}},
        }
    )
    names = [f"epoch-{i}" for i in range(1, 6)]
    net = spec.networks["n"]
    assert _evolution_names(spec, "n", net, names) == {"epoch-1", "epoch-4"}
    assert _evolution_names(spec, "n", net.model_copy(update={"evolution": True}), names) == set(names)
    assert _evolution_names(spec, "n", net.model_copy(update={"evolution": False}), names) == set()
    with pytest.raises(SpecError, match=r"networks\.n\.evolution: unknown checkpoints \['epoch-9'\]"):
        _evolution_names(spec, "n", net.model_copy(update={"evolution": ["epoch-9"]}), names)
