"""Training and accuracy charts: curves per epoch, accuracy per checkpoint / network / class, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sitegen.render.charts._base import _TOP_LEGEND, _category_axis, _layout, _round
from sitegen.render.charts.style import ACCENT, MANY_CLASSES, Chart, class_color, network_color, plotly_text


def training_curves(
    epochs: Sequence[int],
    train_acc: Sequence[float],
    probe_acc: Sequence[float],
    loss: Sequence[float],
    marks: Sequence[tuple[int, str]],
    *,
    height: int = 340,
) -> Chart:
    """Accuracy (train and probe, %) and loss per epoch; ``marks`` label the epochs with atlas pages.

    Args:
        epochs: epoch numbers.
        train_acc: train accuracy per epoch, fraction.
        probe_acc: probe accuracy per epoch, fraction.
        loss: training loss per epoch.
        marks: ``(epoch, checkpoint name)`` of checkpoints with atlas pages.
        height: chart height in px.
    """
    data: list[dict[str, Any]] = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "probe accuracy",
            "x": list(epochs),
            "y": _round(np.asarray(probe_acc) * 100, 2),
            "line": {"color": ACCENT, "width": 3},
            "hovertemplate": "epoch %{x}: probe %{y:.1f}%<extra></extra>",
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "train accuracy",
            "x": list(epochs),
            "y": _round(np.asarray(train_acc) * 100, 2),
            "line": {"color": "#8a95a8", "width": 2},
            "hovertemplate": "epoch %{x}: train %{y:.1f}%<extra></extra>",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "loss",
            "x": list(epochs),
            "y": _round(loss, 4),
            "yaxis": "y2",
            "line": {"color": "#d0782a", "width": 2, "dash": "dot"},
            "hovertemplate": "epoch %{x}: training loss %{y:.3f}<extra></extra>",
        },
    ]
    if marks:
        data.append(_atlas_marks(epochs, probe_acc, marks))
    return {
        "data": data,
        "layout": _layout(
            height,
            showlegend=True,
            legend=_TOP_LEGEND,
            xaxis={"title": {"text": "epoch"}, "dtick": 1},
            yaxis={"title": {"text": "top-1 accuracy %"}, "rangemode": "tozero"},
            yaxis2={
                "title": {"text": "training loss"},
                "overlaying": "y",
                "side": "right",
                "showgrid": False,
                "rangemode": "tozero",
            },
            margin={"r": 72, "t": 40},
        ),
    }


def _atlas_marks(
    epochs: Sequence[int], probe_acc: Sequence[float], marks: Sequence[tuple[int, str]]
) -> dict[str, Any]:
    """The diamonds on the probe curve of :func:`training_curves` at the epochs with atlas pages."""
    mark_epochs = {e for e, _ in marks}
    xs = [e for e in epochs if e in mark_epochs]
    ys = [probe_acc[list(epochs).index(e)] * 100 for e in xs]
    return {
        "type": "scatter",
        "mode": "markers",
        "name": "atlas",
        "x": xs,
        "y": _round(ys, 2),
        "marker": {
            "symbol": "diamond",
            "size": 13,
            "color": ACCENT,
            "line": {"color": "#ffffff", "width": 2},
        },
        "text": [plotly_text(n) for e, n in marks if e in mark_epochs],
        "hovertemplate": "%{text}: %{y:.1f}%<extra></extra>",
    }


def checkpoint_accuracy(names: Sequence[str], accuracy: Sequence[float], *, height: int = 220) -> Chart:
    """Probe accuracy (%) per checkpoint, in checkpoint order (a line through the checkpoints)."""
    trace = {
        "type": "scatter",
        "mode": "lines+markers+text",
        "x": [plotly_text(n) for n in names],
        "y": _round(np.asarray(accuracy) * 100, 2),
        "line": {"color": ACCENT, "width": 3},
        "marker": {"size": 9},
    }
    return _accuracy_chart(
        trace, accuracy, textposition="top center", x_title="checkpoint", y_title="accuracy %", height=height
    )


def network_accuracy(networks: Sequence[str], accuracy: Sequence[float], *, height: int = 240) -> Chart:
    """Probe accuracy (%) of several networks' atlas checkpoints, one bar each (compare page)."""
    trace = {
        "type": "bar",
        "x": [plotly_text(n) for n in networks],
        "y": _round(np.asarray(accuracy) * 100, 2),
        "marker": {"color": [network_color(i) for i in range(len(networks))]},
    }
    return _accuracy_chart(
        trace,
        accuracy,
        textposition="outside",
        x_title="network",
        y_title="top-1 probe accuracy %",
        height=height,
    )


def _accuracy_chart(
    trace: dict[str, Any],
    accuracy: Sequence[float],
    *,
    textposition: str,
    x_title: str,
    y_title: str,
    height: int,
) -> Chart:
    """Top-1 probe accuracy (%) along a category axis, each point labelled with its value.

    ``trace`` holds the trace's type, its x (category labels) and y (%) and its look; the labels, the
    hover and the 0..105 % axis are the same for :func:`checkpoint_accuracy` and :func:`network_accuracy`.
    """
    return {
        "data": [
            {
                **trace,
                "text": [f"{a * 100:.1f}%" for a in accuracy],
                "textposition": textposition,
                "cliponaxis": False,
                "hovertemplate": "%{x}: top-1 probe accuracy %{y:.1f}%<extra></extra>",
            }
        ],
        "layout": _layout(
            height,
            xaxis={"type": "category", "title": {"text": x_title}},
            yaxis={"title": {"text": y_title}, "range": [0, 105]},
            margin={"t": 24},
        ),
    }


def training_comparison(
    series: Sequence[tuple[str, Sequence[int], Sequence[float]]], *, height: int = 260
) -> Chart:
    """Probe accuracy per epoch of several networks (compare page); ``series`` = (network, epochs, acc)."""
    data = [
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": plotly_text(name),
            "x": list(epochs),
            "y": _round(np.asarray(acc) * 100, 2),
            "line": {"color": network_color(i), "width": 3},
            "hovertemplate": f"{plotly_text(name)}, epoch %{{x}}: probe accuracy %{{y:.1f}}%<extra></extra>",
        }
        for i, (name, epochs, acc) in enumerate(series)
    ]
    return {
        "data": data,
        "layout": _layout(
            height,
            showlegend=True,
            legend=_TOP_LEGEND,
            xaxis={"title": {"text": "epoch"}, "dtick": 1},
            yaxis={"title": {"text": "probe accuracy %"}, "range": [0, 105]},
            margin={"t": 40},
        ),
    }


def confusion_heatmap(confusion: np.ndarray, class_names: Sequence[str], *, height: int = 520) -> Chart:
    """The confusion matrix (rows = true class, columns = predicted), coloured by row share.

    Row-normalizing keeps small classes visible; the hover gives the raw count.
    """
    conf = np.asarray(confusion, dtype=np.int64)
    rows = conf.sum(1, keepdims=True)
    share = np.divide(conf, rows, out=np.zeros(conf.shape, dtype=np.float64), where=rows > 0)
    names = [plotly_text(n) for n in class_names]
    many = len(names) > MANY_CLASSES
    tick = {"type": "category", "tickfont": {"size": 11 if many else 14}}
    return {
        "data": [
            {
                "type": "heatmap",
                "z": [_round(r, 3) for r in share],
                "x": names,
                "y": names,
                "customdata": conf.tolist(),
                "zmin": 0,
                "zmax": 1,
                "colorscale": [[0, "#ffffff"], [0.15, "#dce6fb"], [0.5, "#6d8fe3"], [1, "#17307a"]],
                "colorbar": {
                    "title": {"text": "share of the true class"},
                    "tickformat": ".0%",
                    "thickness": 12,
                },
                "xgap": 0 if many else 1,
                "ygap": 0 if many else 1,
                "hovertemplate": "true <b>%{y}</b><br>predicted <b>%{x}</b><br>%{customdata} images "
                "(%{z:.0%} of the class)<extra></extra>",
            }
        ],
        "layout": _layout(
            height,
            xaxis={**tick, "title": {"text": "predicted"}, "tickangle": -60 if many else -30},
            yaxis={**tick, "title": {"text": "true class"}, "autorange": "reversed"},
            plot_bgcolor="#ffffff",
        ),
    }


def per_class_accuracy(confusion: np.ndarray, class_names: Sequence[str], *, height: int = 300) -> Chart:
    """Top-1 accuracy per class (diagonal / row sum), sorted high to low, bars in class colours."""
    conf = np.asarray(confusion, dtype=np.int64)
    n = conf.sum(1)
    acc = np.divide(np.diag(conf), n, out=np.zeros(len(n), dtype=np.float64), where=n > 0)
    order = np.argsort(-acc, kind="stable")
    names = [plotly_text(class_names[i]) for i in order]
    return {
        "data": [
            {
                "type": "bar",
                "x": names,
                "y": _round(acc[order] * 100, 2),
                "customdata": [[int(conf[i, i]), int(n[i])] for i in order],
                "marker": {"color": [class_color(int(i)) for i in order]},
                "hovertemplate": "<b>%{x}</b><br>%{y:.1f}% correct (%{customdata[0]} of %{customdata[1]})"
                "<extra></extra>",
            }
        ],
        "layout": _layout(
            height,
            xaxis={**_category_axis(len(names)), "title": {"text": "true class"}},
            yaxis={"title": {"text": "top-1 accuracy %"}, "range": [0, 105], "fixedrange": True},
        ),
    }
