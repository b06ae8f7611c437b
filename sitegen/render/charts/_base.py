"""The layout every chart starts from, and the small helpers the chart modules share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sitegen.render.charts.style import FONT, GRID, INK, MANY_CLASSES


def _round(values: np.ndarray | Sequence[float], digits: int = 4) -> list[float]:
    # Short JSON and byte-stable output: 4 significant-ish digits are plenty for a chart.
    return [float(v) for v in np.round(np.asarray(values, dtype=np.float64), digits)]


def _layout(height: int, **extra: Any) -> dict[str, Any]:
    axis = {
        "gridcolor": GRID,
        "zerolinecolor": "#cfd5de",
        "linecolor": "#cfd5de",
        "automargin": True,
        "title": {"font": {"size": 15}},
        "tickfont": {"size": 14},
    }
    layout: dict[str, Any] = {
        "height": height,
        "margin": {"l": 56, "r": 16, "t": 16, "b": 48},
        "font": {"family": FONT, "size": 15, "color": INK},  # a projector's 1920 px (issue 14)
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "#ffffff",
        "hoverlabel": {
            "bgcolor": "#ffffff",
            "bordercolor": "#b9c0cc",
            "font": {"family": FONT, "color": INK},
        },
        "xaxis": dict(axis),
        "yaxis": dict(axis),
        "showlegend": False,
        "bargap": 0.15,
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(layout.get(key), dict):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


_TOP_LEGEND = {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "font": {"size": 14}}


def _category_axis(n: int) -> dict[str, Any]:
    axis: dict[str, Any] = {"type": "category", "fixedrange": False}
    if n > MANY_CLASSES:
        axis |= {"tickangle": -60, "tickfont": {"size": 11}}
    return axis
