"""Plotly figures as plain dicts (``{"data": [...], "layout": {...}}``), embedded with ``|tojson``.

No plotly.py objects: the figures are small JSON documents drawn by the shared ``assets/plotly.min.js``
(``app.js`` calls ``Plotly.newPlot``), which keeps rendering fast and the output byte-stable.

Plotly draws a subset of HTML inside its text (``<b>``, ``<br>``, ``<a href>``…) and decodes entities,
so every user string handed to it goes through :func:`plotly_text` first: a class named
``<img src=x onerror=alert(1)>`` then shows up as those characters, never as markup.

Colours: :func:`class_color` gives every class one colour everywhere (bars, heatmap ticks, the class
chips in HTML), spreading hues by the golden angle so neighbouring class indices never look alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

Chart = dict[str, Any]

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
INK = "#1d2330"
GRID = "#e9ecf1"
ACCENT = "#2f5bd3"
MANY_CLASSES = 30  # beyond this, category tick labels get angled and smaller


#: 20 categorical colours ordered so that neighbouring classes differ strongly (CIELAB ΔE ≥ 49 between
#: consecutive entries, ≥ 19 between any two): Kelly's 22 colours of maximum contrast (1965) without
#: white and black, the lightest darkened for a white page, and a few swapped in (issue 14: golden-angle
#: hues gave 16 classes three greens and three purples).
PALETTE = (
    "#0067A5", "#E25822", "#008856", "#875692", "#C99700", "#BE0032", "#4FA3D9", "#654522", "#8DB600",
    "#E68FAC", "#2B3D26", "#F38400", "#62C26B", "#848482", "#B3446C", "#1F9E89", "#882D17", "#A39B6A",
    "#D35FB7", "#A8A000",
)  # fmt: skip

#: Marker shapes of the embedding, cycled per class (7 is prime to the palette's 20: every one of the
#: first 140 classes gets its own colour + shape pair).
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "triangle-down", "x")


def class_color(index: int) -> str:
    """The colour of class ``index`` (CSS / Plotly colour), the same on every chart and chip.

    The first 20 classes take :data:`PALETTE`; beyond it, hues step by the golden angle (137.5°) with
    alternating lightness, so nearby indices still differ.

    Example:
        >>> class_color(0), class_color(1), class_color(20)
        ('#0067A5', '#E25822', 'hsl(0, 62%, 44%)')
    """
    if 0 <= index < len(PALETTE):
        return PALETTE[index]
    j = index - len(PALETTE)
    return f"hsl({(j * 137.508) % 360:.0f}, 62%, {44 if j % 2 == 0 else 34}%)"


def class_symbol(index: int) -> str:
    """The embedding marker shape of class ``index`` (:data:`SYMBOLS`, cycled)."""
    return SYMBOLS[index % len(SYMBOLS)]


#: How the embedding methods are written (issue 14: axis titles said "tsne 1").
METHOD_NAMES = {"tsne": "t-SNE", "pca": "PCA", "umap": "UMAP"}


def method_name(method: str) -> str:
    """``"tsne"`` → ``"t-SNE"``; unknown methods come back as given."""
    return METHOD_NAMES.get(method, method)


def plotly_text(text: str) -> str:
    """Escape a user string for Plotly text, ticks and hovers (Plotly renders some HTML tags)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


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


def network_color(index: int) -> str:
    """The colour of the ``index``-th network of a comparison (distinct from neighbouring class hues)."""
    return ("#2f5bd3", "#e07b39", "#1f9e89", "#b8409a", "#7a8b99", "#c9a227")[index % 6]


def _category_axis(n: int) -> dict[str, Any]:
    axis: dict[str, Any] = {"type": "category", "fixedrange": False}
    if n > MANY_CLASSES:
        axis |= {"tickangle": -60, "tickfont": {"size": 11}}
    return axis


def class_preference(
    weighted: np.ndarray,
    counts: np.ndarray,
    class_names: Sequence[str],
    *,
    layers: int | None = None,
    height: int = 340,
) -> Chart:
    """The rank-weighted class histogram of a layer, or the network's overall preference, sorted.

    Args:
        weighted: ``[C]`` a layer's rank-weighted scores (weight ``k + 1 - r`` for rank ``r``), or
            with ``layers`` the overall preference: the sum over layers of each layer's scores scaled
            to sum 1 (:func:`sitegen.analyses.class_hist.overall_preference`).
        counts: ``[C]`` how many top-k images of the layer's (all layers') units belong to each class.
        class_names: ``C`` names.
        layers: the number of layers summed in ``weighted``; the chart then plots the mean share
            (``weighted / layers``, in %), the number the overall row of the bias table ranks by.
        height: chart height in px.

    Returns:
        A bar chart; drag zooms along the classes (the y axis stays fixed); the axis title and the
        hover name the plotted number (issue 14: the overall chart called a sum of shares a count).
    """
    w = np.asarray(weighted, dtype=np.float64)
    order = np.argsort(-w, kind="stable")
    names = [plotly_text(class_names[i]) for i in order]
    total = float(np.sum(w)) or 1.0
    share = [round(100 * float(w[i]) / total, 1) for i in order]
    if layers is None:
        y = _round(w[order], 2)
        y_title = "rank-weighted score"
        hover = (
            "<b>%{x}</b><br>rank-weighted score %{y:,.0f} (Σ over units of k + 1 − rank)"
            "<br>= %{customdata[1]}% of the layer's score"
            "<br>%{customdata[0]:,} of the layer's top-k images are of this class<extra></extra>"
        )
    else:
        y = _round(w[order] / max(layers, 1) * 100, 3)
        y_title = "mean share of a layer's score (%)"
        hover = (
            f"<b>%{{x}}</b><br>%{{y:.2f}}% of a layer's rank-weighted score, mean over {layers} layers"
            "<br>%{customdata[0]:,} top-k images of this class over all layers<extra></extra>"
        )
    return {
        "data": [
            {
                "type": "bar",
                "x": names,
                "y": y,
                "customdata": [[int(counts[i]), sh] for i, sh in zip(order, share, strict=True)],
                "marker": {"color": [class_color(int(i)) for i in order]},
                "hovertemplate": hover,
            }
        ],
        "layout": _layout(
            height,
            xaxis={**_category_axis(len(names)), "title": {"text": "class, most preferred first"}},
            yaxis={"title": {"text": y_title}, "fixedrange": True},
        ),
    }


def _rank_color(r: int, k: int) -> str:
    # Rank 1 darkest: the eye reads the base of each stacked bar as the strongest evidence.
    t = r / max(k - 1, 1)
    return f"hsl({222 - 22 * t:.0f}, {72 - 17 * t:.0f}%, {28 + 52 * t:.0f}%)"


def rank_histograms(per_rank: np.ndarray, class_names: Sequence[str], *, height: int = 360) -> Chart:
    """The per-rank class histograms of a layer, stacked (rank 1 at the bottom), classes in the order
    of the weighted histogram. Clicking a rank in the legend hides it; double-clicking isolates it.

    Args:
        per_rank: ``[k, C]`` units whose rank-``r`` image belongs to each class.
        class_names: ``C`` names.
        height: chart height in px.
    """
    k = per_rank.shape[0]
    weights = (k - np.arange(k))[:, None]
    order = np.argsort(-(weights * per_rank).sum(0), kind="stable")
    names = [plotly_text(class_names[i]) for i in order]
    data = [
        {
            "type": "bar",
            "name": f"rank {r + 1}",
            "x": names,
            "y": _round(per_rank[r][order], 2),
            "marker": {"color": _rank_color(r, k)},
            "hovertemplate": f"<b>%{{x}}</b><br>%{{y}} units have an image of this class at rank {r + 1}"
            "<extra></extra>",
        }
        for r in range(k)
    ]
    return {
        "data": data,
        "layout": _layout(
            height,
            barmode="stack",
            showlegend=True,
            xaxis={**_category_axis(len(names)), "title": {"text": "class, most preferred first"}},
            yaxis={"title": {"text": "units, by rank r of the image"}, "fixedrange": True},
            legend={"orientation": "v", "x": 1.01, "y": 1, "font": {"size": 14}, "title": {"text": "rank r"}},
            margin={"r": 90},
        ),
    }


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
    mark_epochs = {e for e, _ in marks}
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
    if mark_epochs:
        xs = [e for e in epochs if e in mark_epochs]
        ys = [probe_acc[list(epochs).index(e)] * 100 for e in xs]
        data.append(
            {
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
        )
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


def checkpoint_accuracy(names: Sequence[str], accuracy: Sequence[float], *, height: int = 220) -> Chart:
    """Probe accuracy (%) per checkpoint, in checkpoint order (a line through the checkpoints)."""
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers+text",
                "x": [plotly_text(n) for n in names],
                "y": _round(np.asarray(accuracy) * 100, 2),
                "line": {"color": ACCENT, "width": 3},
                "marker": {"size": 9},
                "text": [f"{a * 100:.1f}%" for a in accuracy],
                "textposition": "top center",
                "cliponaxis": False,
                "hovertemplate": "%{x}: top-1 probe accuracy %{y:.1f}%<extra></extra>",
            }
        ],
        "layout": _layout(
            height,
            xaxis={"type": "category", "title": {"text": "checkpoint"}},
            yaxis={"title": {"text": "accuracy %"}, "range": [0, 105]},
            margin={"t": 24},
        ),
    }


def network_accuracy(networks: Sequence[str], accuracy: Sequence[float], *, height: int = 240) -> Chart:
    """Probe accuracy (%) of several networks' atlas checkpoints, one bar each (compare page)."""
    return {
        "data": [
            {
                "type": "bar",
                "x": [plotly_text(n) for n in networks],
                "y": _round(np.asarray(accuracy) * 100, 2),
                "marker": {"color": [network_color(i) for i in range(len(networks))]},
                "text": [f"{a * 100:.1f}%" for a in accuracy],
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": "%{x}: top-1 probe accuracy %{y:.1f}%<extra></extra>",
            }
        ],
        "layout": _layout(
            height,
            xaxis={"type": "category", "title": {"text": "network"}},
            yaxis={"title": {"text": "top-1 probe accuracy %"}, "range": [0, 105]},
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


def preference_comparison(
    networks: Sequence[str],
    weighted: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    overall: bool = False,
    height: int = 360,
) -> Chart:
    """Class preference of several networks / checkpoints as grouped bars (share of each one's total, %).

    ``weighted`` are one layer's rank-weighted histograms (diff pages) or, with ``overall``, the
    networks' overall preferences (compare page; the share is then the mean over layers of the class's
    share of each layer's score). Classes are sorted by the mean share, so shared favourites come first.
    """
    shares = np.stack([np.asarray(w, dtype=np.float64) / (float(np.sum(w)) or 1.0) for w in weighted]) * 100
    order = np.argsort(-shares.mean(0), kind="stable")
    names = [plotly_text(class_names[i]) for i in order]
    what = "a layer's rank-weighted score, mean over layers" if overall else "the layer's rank-weighted score"
    data = [
        {
            "type": "bar",
            "name": plotly_text(net),
            "x": names,
            "y": _round(shares[j][order], 3),
            "marker": {"color": network_color(j)},
            "hovertemplate": f"{plotly_text(net)}<br><b>%{{x}}</b>: %{{y:.1f}}% of {what}<extra></extra>",
        }
        for j, net in enumerate(networks)
    ]
    return {
        "data": data,
        "layout": _layout(
            height,
            barmode="group",
            showlegend=True,
            legend=_TOP_LEGEND,
            xaxis={**_category_axis(len(names)), "title": {"text": "class"}},
            yaxis={
                "title": {
                    "text": "mean share of a layer's score (%)"
                    if overall
                    else "share of the layer's score (%)"
                },
                "fixedrange": True,
            },
            margin={"t": 40},
        ),
    }


def layer_color(index: int, n: int) -> str:
    """The colour of the ``index``-th of ``n`` layers: light teal (shallow) to dark blue (deep)."""
    t = index / max(n - 1, 1)
    return f"hsl({180 + 45 * t:.0f}, {60 + 10 * t:.0f}%, {58 - 30 * t:.0f}%)"


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


# --- issue 7: the literature's other techniques -----------------------------------------------------

#: The occlusion drop's colour scale, fixed at 0..1 (issue 14: a min–max stretch per map made a
#: 0.979–0.997 range look like a total loss). Zero drop is transparent so the image shows through;
#: the colours are magma's, from light (small drop) to dark (total drop).
DROP_SCALE = [
    [0.0, "rgba(252, 253, 191, 0)"],
    [0.05, "rgba(252, 253, 191, 0.35)"],
    [0.25, "rgba(254, 159, 109, 0.7)"],
    [0.5, "rgba(222, 73, 104, 0.8)"],
    [0.75, "rgba(140, 41, 129, 0.88)"],
    [1.0, "rgba(59, 15, 112, 0.92)"],
]


def occlusion_maps(
    image_src: str,
    image_size: int,
    rows: Sequence[float],
    cols: Sequence[float],
    panels: Sequence[tuple[str, Sequence[Sequence[float]], Sequence[Sequence[float]], str]],
    *,
    height: int = 300,
) -> Chart:
    """Occlusion-sensitivity maps (Zeiler & Fergus 2013, Fig. 7) drawn over the probe image.

    Each panel is one Plotly heatmap over a copy of the image (a layout image in the panel's axes),
    indexed by the occluder's centre in input pixels. All panels share one fixed colour axis, the
    drop from 0 (transparent) to 1 (dark), with a colour bar: a small drop looks small.

    Args:
        image_src: page-relative URL of the image.
        image_size: its side in px (the axes span 0..image_size, rows downwards).
        rows: occluder centre rows; ``cols``: centre columns.
        panels: ``(title, drop[R][C], value[R][C], value_name)`` per panel: the drop (clipped to
            0..1 for the colour; negative = occluding raised it) and the occluded value for the hover.
        height: chart height in px.
    """
    n = len(panels)
    gap = 0.04
    width = (0.9 - gap * (n - 1)) / n  # the right 10 % holds the colour bar
    data: list[dict[str, Any]] = []
    layout_extra: dict[str, Any] = {"images": [], "annotations": []}
    for i, (title, drop, value, value_name) in enumerate(panels):
        ax = "" if i == 0 else str(i + 1)
        x0 = i * (width + gap)
        data.append(
            {
                "type": "heatmap",
                "x": [float(c) for c in cols],
                "y": [float(r) for r in rows],
                "z": drop,
                "customdata": value,
                "coloraxis": "coloraxis",
                "xaxis": f"x{ax}",
                "yaxis": f"y{ax}",
                "hovertemplate": f"{plotly_text(title)}<br>grey square centred at row %{{y:.0f}}, "
                "col %{x:.0f}"
                f"<br>{plotly_text(value_name)} %{{customdata:.3f}}, drop %{{z:.3f}}<extra></extra>",
            }
        )
        layout_extra[f"xaxis{ax}"] = {
            "domain": [x0, x0 + width],
            "range": [0, image_size],
            "showgrid": False,
            "zeroline": False,
            "showticklabels": False,
            "ticks": "",
            "showline": False,
            "constrain": "domain",
        }
        layout_extra[f"yaxis{ax}"] = {
            "range": [image_size, 0],
            "showgrid": False,
            "zeroline": False,
            "showticklabels": False,
            "ticks": "",
            "showline": False,
            "scaleanchor": f"x{ax}",
        }
        layout_extra["images"].append(
            {
                "source": image_src,
                "xref": f"x{ax}",
                "yref": f"y{ax}",
                "x": 0,
                "y": 0,
                "sizex": image_size,
                "sizey": image_size,
                "sizing": "stretch",
                "layer": "below",
            }
        )
        layout_extra["annotations"].append(
            {
                "text": plotly_text(title),
                "xref": "paper",
                "yref": "paper",
                "x": x0 + width / 2,
                "y": 1.0,
                "yanchor": "bottom",
                "showarrow": False,
                "font": {"size": 14},
            }
        )
    layout_extra["coloraxis"] = {
        "cmin": 0,
        "cmax": 1,
        "colorscale": DROP_SCALE,
        "colorbar": {
            "title": {"text": "drop", "side": "top"},
            "tickvals": [0, 0.25, 0.5, 0.75, 1],
            "thickness": 14,
            "len": 0.9,
            "x": 0.93,
            "xanchor": "left",
            "outlinewidth": 1,
            "outlinecolor": "#cfd5de",
        },
    }
    return {"data": data, "layout": _layout(height, margin={"l": 8, "r": 8, "t": 48, "b": 8}, **layout_extra)}


def embedding_scatter(
    x: Sequence[float],
    y: Sequence[float],
    labels: Sequence[int],
    predicted: Sequence[int],
    class_names: Sequence[str],
    *,
    method: str,
    height: int = 520,
) -> Chart:
    """2-D embedding of the probe set, one trace per class (legend toggles a class).

    Each class has its colour and a marker shape (:func:`class_symbol`); misclassified images use the
    open variant of the shape. The axes fit the points (no locked aspect: t-SNE distances between
    clusters mean little, and a square frame left most of a wide plot empty).
    """
    names = [plotly_text(n) for n in class_names]
    label = method_name(method)
    xs, ys = np.asarray(x), np.asarray(y)
    lab, pred = np.asarray(labels), np.asarray(predicted)
    data = []
    for c, name in enumerate(names):
        idx = np.flatnonzero(lab == c)
        if not len(idx):
            continue
        idx = idx[np.argsort(pred[idx] != c, kind="stable")]  # correct first: the legend shows point 1
        wrong = pred[idx] != c
        shape = class_symbol(c)
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": name,
                "x": _round(xs[idx], 4),
                "y": _round(ys[idx], 4),
                "customdata": [[int(i), names[int(p)]] for i, p in zip(idx, pred[idx], strict=True)],
                "marker": {
                    "color": class_color(c),
                    "size": 9,
                    "symbol": [f"{shape}-open" if w else shape for w in wrong.tolist()],
                    "line": {"width": 1.5, "color": class_color(c)},
                },
                "hovertemplate": f"image %{{customdata[0]}}<br>true class <b>{name}</b><br>"
                "predicted %{customdata[1]}<br>" + label + " (%{x:.1f}, %{y:.1f})<extra></extra>",
            }
        )
    axis = {"zeroline": False, "showgrid": True}
    return {
        "data": data,
        "layout": _layout(
            height,
            showlegend=True,
            legend={"orientation": "v", "x": 1.01, "y": 1, "font": {"size": 13}, "itemsizing": "constant"},
            xaxis={**axis, "title": {"text": f"{label} dimension 1"}},
            yaxis={**axis, "title": {"text": f"{label} dimension 2"}},
            margin={"r": 150},
        ),
    }


def invariance_curves(
    kind: str,
    unit: str,
    amounts: Sequence[float],
    layers: Sequence[str],
    relative: Sequence[Sequence[Sequence[float]]],
    true_prob: Sequence[Sequence[float]],
    images: Sequence[str],
    image_classes: Sequence[int],
    *,
    height: int = 300,
) -> Chart:
    """Invariance (Zeiler & Fergus 2013, Fig. 5) for one transform kind, two panels side by side.

    Left: relative feature distance ``||f(Tx) - f(x)|| / ||f(x)||`` per layer (mean over the images,
    thick; one thin line per image). Right: true-class probability per image (class colours).
    """
    xs = [float(a) for a in amounts]
    data: list[dict[str, Any]] = []
    rel = np.asarray(relative, dtype=np.float64)  # [L, B, A]
    for li, layer in enumerate(layers):
        color = layer_color(li, len(layers))
        for b in range(rel.shape[1]):
            data.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": xs,
                    "y": _round(rel[li, b], 4),
                    "line": {"color": color, "width": 1},
                    "opacity": 0.35,
                    "hoverinfo": "skip",
                    "showlegend": False,
                }
            )
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": plotly_text(layer),
                "x": xs,
                "y": _round(rel[li].mean(0), 4),
                "line": {"color": color, "width": 3},
                "marker": {"size": 5},
                "hovertemplate": f"{plotly_text(layer)}, %{{x}} {unit}: mean relative feature distance "
                "%{y:.3f}<extra></extra>",
            }
        )
    for b, (name, c) in enumerate(zip(images, image_classes, strict=True)):
        data.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": plotly_text(name),
                "x": xs,
                "y": _round(np.asarray(true_prob[b]), 4),
                "xaxis": "x2",
                "yaxis": "y2",
                "line": {"color": class_color(c), "width": 2},
                "marker": {"size": 4},
                "hovertemplate": f"{plotly_text(name)}, %{{x}} {unit}: true-class probability %{{y:.3f}}"
                "<extra></extra>",
            }
        )
    return {
        "data": data,
        "layout": _layout(
            height,
            showlegend=True,
            legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom", "font": {"size": 13}},
            xaxis={"domain": [0, 0.46], "title": {"text": f"{kind} ({unit})"}},
            yaxis={"title": {"text": "‖f(Tx) − f(x)‖ / ‖f(x)‖"}, "rangemode": "tozero"},
            xaxis2={
                "domain": [0.56, 1],
                "title": {"text": f"{kind} ({unit})"},
                "anchor": "y2",
                "gridcolor": GRID,
            },
            yaxis2={
                "title": {"text": "true-class probability"},
                "range": [0, 1.02],
                "anchor": "x2",
                "gridcolor": GRID,
            },
            margin={"t": 56},
        ),
    }


def density_scatter(
    density: Sequence[float | None],
    preference: np.ndarray | Sequence[float],
    class_names: Sequence[str],
    *,
    x_title: str,
    y_title: str = "share of the layer's score (%)",
    rho: float | None,
    height: int = 340,
) -> Chart:
    """Class preference (share of the layer's rank-weighted score) against class stroke density."""
    names = [plotly_text(n) for n in class_names]
    pref = np.asarray(preference, dtype=np.float64)
    share = pref / pref.sum() * 100 if pref.sum() > 0 else pref
    keep = [i for i, d in enumerate(density) if d is not None]
    rho_text = "undefined" if rho is None else f"{rho:+.2f}"
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "markers+text",
                "x": [round(float(density[i]) * 100, 3) for i in keep],  # type: ignore[arg-type]
                "y": [round(float(share[i]), 3) for i in keep],
                "text": [names[i] for i in keep],
                "textposition": "top center",
                "textfont": {"size": 13},
                "marker": {"color": [class_color(i) for i in keep], "size": 12},
                "hovertemplate": "<b>%{text}</b><br>"
                + plotly_text(x_title)
                + " %{x:.1f}<br>"
                + plotly_text(y_title)
                + " %{y:.1f}<extra></extra>",
            }
        ],
        "layout": _layout(
            height,
            xaxis={"title": {"text": x_title}},
            yaxis={"title": {"text": y_title}, "rangemode": "tozero"},
            annotations=[
                {
                    "text": f"Spearman ρ = {rho_text}",
                    "xref": "paper",
                    "yref": "paper",
                    "x": 0.01,
                    "y": 0.99,
                    "xanchor": "left",
                    "yanchor": "top",
                    "showarrow": False,
                    "font": {"size": 13},
                    "bgcolor": "rgba(255,255,255,0.8)",
                }
            ],
        ),
    }


def density_correlation(
    layers: Sequence[str],
    rho_density: Sequence[float | None],
    rho_complexity: Sequence[float | None],
    *,
    density_label: str,
    height: int = 300,
) -> Chart:
    """Spearman's ρ between each layer's class preference and class density / complexity, by depth."""
    names = [plotly_text(n) for n in layers]
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": plotly_text(density_label),
                "x": names,
                "y": list(rho_density),
                "line": {"color": ACCENT, "width": 3},
                "marker": {"size": 8},
                "hovertemplate": "%{x}: Spearman ρ = %{y:.2f} between class preference and "
                + plotly_text(density_label)
                + "<extra></extra>",
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "complexity (PNG bytes)",
                "x": names,
                "y": list(rho_complexity),
                "line": {"color": "#d0782a", "width": 2, "dash": "dot"},
                "marker": {"size": 7},
                "hovertemplate": "%{x}: Spearman ρ = %{y:.2f} between class preference and complexity"
                "<extra></extra>",
            },
        ],
        "layout": _layout(
            height,
            showlegend=True,
            legend=_TOP_LEGEND,
            xaxis={"type": "category", "title": {"text": "layer"}},
            yaxis={
                "title": {"text": "Spearman ρ with class preference"},
                "range": [-1.05, 1.05],
                "zeroline": True,
            },
            margin={"t": 40},
        ),
    }


def activation_histogram(
    lo: float, hi: float, counts: Sequence[int], *, threshold: float | None = None, height: int = 260
) -> Chart:
    """One unit's per-image maxima: equal-width bins over [lo, hi] (issue 15), as bars."""
    bins = max(len(counts), 1)
    width = (hi - lo) / bins if hi > lo else 1.0
    centres = [lo + (i + 0.5) * width for i in range(len(counts))]
    layout = _layout(
        height,
        bargap=0.02,
        xaxis={"title": {"text": "the unit's maximum per image"}},
        yaxis={"title": {"text": "probe images"}, "rangemode": "tozero"},
    )
    if threshold is not None and hi > threshold:
        layout["shapes"] = [
            {"type": "line", "xref": "x", "yref": "paper", "x0": threshold, "x1": threshold, "y0": 0, "y1": 1,
             "line": {"color": "#b0b7c3", "width": 1, "dash": "dot"}}
        ]  # fmt: skip
    return {
        "data": [
            {
                "type": "bar",
                "x": _round(centres),
                "y": [int(c) for c in counts],
                "width": round(width * 0.98, 6),
                "marker": {"color": ACCENT},
                "customdata": _round([c - width / 2 for c in centres]),
                "hovertemplate": "maximum %{customdata:.3g} to %{x:.3g} (bin centre): %{y} images"
                "<extra></extra>",
            }
        ],
        "layout": layout,
    }


def density_histogram(density: Sequence[float], *, rare: float, height: int = 260) -> Chart:
    """How many units of a layer fire on what share of the probe images (issue 15): dead units
    (density 0), rarely firing ones (below ``rare``), then bins of 5 % (the first from ``rare``)."""
    d = np.asarray(density, dtype=np.float64) * 100
    r = rare * 100
    dead = int((d == 0).sum())
    few = int(((d > 0) & (d < r)).sum())
    edges = np.linspace(0, 100, 21)
    edges = np.concatenate([[r], edges[edges > r]]) if r < 100 else np.array([100.0, 100.0])
    counts = np.histogram(d[d >= r], bins=edges)[0] if d.size else np.zeros(len(edges) - 1, int)
    bins = [f"{edges[i]:.3g}–{edges[i + 1]:.3g}%" for i in range(len(edges) - 1)]
    labels = ["dead (0%)", f"rare (<{r:g}%)", *bins]
    colors = ["#BE0032", "#C99700"] + [ACCENT] * len(bins)
    return {
        "data": [
            {
                "type": "bar",
                "x": labels,
                "y": [dead, few, *(int(c) for c in counts)],
                "marker": {"color": colors},
                "hovertemplate": "density %{x}: %{y} units<extra></extra>",
            }
        ],
        "layout": _layout(
            height,
            xaxis={"type": "category", "title": {"text": "density: share of probe images the unit fires on"},
                   "tickangle": -45},
            yaxis={"title": {"text": "units"}, "rangemode": "tozero"},
        ),
    }  # fmt: skip


# --- text alternatives (issue 14: charts need an accessible name and a text alternative) ------------


def cka_heatmap(
    cka: Sequence[Sequence[float | None]],
    layers_a: Sequence[str],
    layers_b: Sequence[str],
    name_a: str,
    name_b: str,
    *,
    height: int = 420,
) -> Chart:
    """Linear CKA (Kornblith et al. 2019) of every layer of A (rows, first at the top) with every layer of
    B (columns), 0..1 on a fixed colour bar; undefined cells (a constant layer) stay blank."""
    z = [[None if v is None else round(float(v), 3) for v in row] for row in cka]
    text = [["" if v is None else f"{v:.2f}" for v in row] for row in z]
    trace: dict[str, Any] = {
        "type": "heatmap",
        "z": z,
        "x": [plotly_text(n) for n in layers_b],
        "y": [plotly_text(n) for n in layers_a],
        "zmin": 0,
        "zmax": 1,
        "colorscale": [[0, "#ffffff"], [0.25, "#dce6fb"], [0.6, "#6d8fe3"], [1, "#17307a"]],
        "colorbar": {"title": {"text": "CKA"}, "thickness": 12, "tickvals": [0, 0.5, 1]},
        "xgap": 1,
        "ygap": 1,
        "hovertemplate": f"{plotly_text(name_a)} <b>%{{y}}</b><br>{plotly_text(name_b)} <b>%{{x}}</b>"
        "<br>CKA %{z:.3f}<extra></extra>",
    }
    if len(layers_a) * len(layers_b) <= 144:  # values in the cells while they fit
        # meta.cellText: app.js drops the cell text where cells are too narrow to hold it (390 px)
        trace |= {"text": text, "texttemplate": "%{text}", "textfont": {"size": 12}}
        trace["meta"] = {"cellText": True}
    return {
        "data": [trace],
        "layout": _layout(
            height,
            xaxis={
                "type": "category",
                "title": {"text": f"layer of {plotly_text(name_b)}"},
                "tickangle": -45,
            },
            yaxis={
                "type": "category",
                "title": {"text": f"layer of {plotly_text(name_a)}"},
                "autorange": "reversed",
            },
            margin={"l": 72, "r": 8, "t": 8, "b": 64},
        ),
    }


def _plain(text: Any) -> str:
    """A Plotly string as plain text: entities decoded, tags dropped (the template escapes it again)."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", " ", str(text))).strip()


def _axis_title(layout: dict[str, Any], name: str) -> str:
    axis = layout.get(name) or {}
    if axis.get("showticklabels") is False:
        return ""
    return _plain((axis.get("title") or {}).get("text", ""))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return _plain(v)


def describe(spec: Chart, *, limit: int = 8) -> tuple[str, str]:
    """A chart's accessible name and a short text alternative, read from its own spec.

    The name says what is plotted against what (the axis titles); the description lists each trace
    with its first ``limit`` points (bars are sorted, so these are the largest) or, for heatmaps, the
    grid size and value range.

    Returns:
        ``(name, description)``, plain text.
    """
    layout = spec.get("layout", {})
    data = spec.get("data", [])
    kinds = sorted({str(t.get("type", "scatter")) for t in data})
    kind = (
        {"bar": "Bar chart", "scatter": "Chart", "heatmap": "Heatmap"}.get(kinds[0], "Chart")
        if kinds
        else "Chart"
    )
    x, y = _axis_title(layout, "xaxis"), _axis_title(layout, "yaxis")
    y2 = _axis_title(layout, "yaxis2")
    if y and x:
        name = f"{kind}: {y} by {x}" + (f", and {y2}" if y2 else "")
    elif layout.get("annotations"):
        name = f"{kind}: " + "; ".join(_plain(a.get("text", "")) for a in layout["annotations"])
    else:
        name = f"{kind}: {y or x or 'values'}"
    parts = []
    for t in data:
        if t.get("hoverinfo") == "skip":
            continue
        label = _plain(t.get("name", "")) if t.get("name") else ""
        if t.get("type") == "heatmap":
            z = np.asarray(t.get("z", []), dtype=np.float64)
            if z.size:
                parts.append(
                    f"{label + ': ' if label else ''}{z.shape[0]}×{z.shape[-1]} grid, values "
                    f"{np.nanmin(z):.3g} to {np.nanmax(z):.3g}"
                )
            continue
        xs, ys = list(t.get("x", [])), list(t.get("y", []))
        pts = [f"{_fmt(a)}: {_fmt(b)}" for a, b in zip(xs[:limit], ys[:limit], strict=False) if b is not None]
        more = f" (and {len(xs) - limit} more)" if len(xs) > limit else ""
        parts.append(f"{label + ': ' if label else ''}{', '.join(pts)}{more}")
    return name, "; ".join(p for p in parts if p)[:1200]
