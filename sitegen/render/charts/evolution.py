"""Charts of how units change between checkpoints: top-k overlap (diff page) and stability in training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sitegen.render.charts._base import _TOP_LEGEND, _layout, _round
from sitegen.render.charts.style import Chart, layer_color, plotly_text


def diff_overlap(
    layers: Sequence[str],
    mean_overlap: Sequence[float],
    mean_rbo: Sequence[float],
    k: int,
    *,
    rbo_p: float,
    height: int = 300,
) -> Chart:
    """Mean top-k overlap per layer between two checkpoints (bars, left axis 0..k) and the mean
    rank-biased overlap of the top-k lists (diamonds, right axis 0..1; :mod:`sitegen.diff`), diff page."""
    names = [plotly_text(n) for n in layers]
    return {
        "data": [
            {
                "type": "bar",
                "name": f"mean top-{k} overlap",
                "x": names,
                "y": _round(mean_overlap, 3),
                "marker": {"color": [layer_color(i, len(names)) for i in range(len(names))]},
                "text": [f"{v:.1f}" for v in mean_overlap],
                "textposition": "inside",
                "insidetextanchor": "end",
                "textfont": {"color": "#ffffff"},
                "hovertemplate": f"<b>%{{x}}</b><br>%{{y:.2f}} of the top-{k} images kept<extra></extra>",
            },
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"mean RBO (p = {rbo_p:g})",
                "x": names,
                "y": _round(mean_rbo, 3),
                "yaxis": "y2",
                "marker": {
                    "symbol": "diamond",
                    "size": 12,
                    "color": "#e07b39",
                    "line": {"color": "#fff", "width": 1},
                },
                "hovertemplate": "<b>%{x}</b><br>mean rank-biased overlap %{y:.3f}<br>(1 = same top-"
                + str(k)
                + " in the same order, 0 = disjoint)<extra></extra>",
            },
        ],
        "layout": _layout(
            height,
            showlegend=True,
            legend=_TOP_LEGEND,
            xaxis={"type": "category", "title": {"text": "layer"}},
            yaxis={
                "title": {"text": f"mean images of the top-{k} kept"},
                "range": [0, k * 1.12],
                "fixedrange": True,
            },
            yaxis2={
                "title": {"text": "rank-biased overlap (0..1)"},
                "overlaying": "y",
                "side": "right",
                "range": [0, 1.12],
                "tickvals": [0, 0.25, 0.5, 0.75, 1],
                "showgrid": False,
                "zeroline": False,
                "fixedrange": True,
            },
            margin={"r": 64, "t": 40},
        ),
    }


def stability_curves(
    layers: Sequence[str],
    x: Sequence[int | str],
    series: Sequence[Sequence[float | None]],
    k: int,
    *,
    numeric: bool = True,
    height: int = 360,
) -> Chart:
    """Feature stability during training: per layer (one line each, shallow light → deep dark), the mean
    top-k overlap of its units with the final checkpoint at every checkpoint (Zeiler & Fergus 2013 §4.1).

    Args:
        layers: layer names.
        x: epoch numbers (``numeric``) or checkpoint names, one per checkpoint.
        series: per layer, the mean overlap (0..k) per checkpoint; None where it could not be computed.
        k: the top-k.
        numeric: x holds epoch numbers (a linear axis) rather than names (a category axis).
        height: chart height in px.
    """
    xs = list(x) if numeric else [plotly_text(str(v)) for v in x]
    # two checkpoints are two measurements, not a trajectory: a line between them would suggest one
    mode = "lines+markers" if len(xs) >= 3 else "markers"
    data = [
        {
            "type": "scatter",
            "mode": mode,
            "name": plotly_text(name),
            "x": xs,
            "y": [None if v is None else round(float(v), 3) for v in values],
            "line": {"color": layer_color(i, len(layers)), "width": 3},
            "marker": {"size": 8 if len(xs) >= 3 else 12},
            "hovertemplate": f"{plotly_text(name)}, %{{x}}: %{{y:.2f}} of the final top-{k}<extra></extra>",
        }
        for i, (name, values) in enumerate(zip(layers, series, strict=True))
    ]
    xaxis: dict[str, Any] = {"title": {"text": "epoch" if numeric else "checkpoint"}}
    if not numeric:
        xaxis["type"] = "category"
    elif len(xs) <= 20:
        xaxis["dtick"] = 1
    return {
        "data": data,
        "layout": _layout(
            height,
            showlegend=True,
            legend={"orientation": "v", "x": 1.01, "y": 1, "font": {"size": 14}, "title": {"text": "layer"}},
            xaxis=xaxis,
            yaxis={"title": {"text": f"mean overlap with final top-{k}"}, "range": [0, k * 1.05]},
            margin={"r": 110},
        ),
    }
