"""Class preference charts: a layer's (or the network's) class histogram, per rank, and compared."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sitegen.render.charts._base import _TOP_LEGEND, _category_axis, _layout, _round
from sitegen.render.charts.style import Chart, class_color, network_color, plotly_text


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
