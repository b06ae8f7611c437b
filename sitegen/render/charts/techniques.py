"""Charts of the literature's other techniques (issue 7): occlusion, embedding, invariance, layer CKA."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sitegen.render.charts._base import _layout, _round
from sitegen.render.charts.style import (
    GRID,
    Chart,
    class_color,
    class_symbol,
    layer_color,
    method_name,
    plotly_text,
)

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

#: An occlusion panel's axes show only the image: no grid, zero line, ticks or axis line.
_BARE_AXIS = {"showgrid": False, "zeroline": False, "showticklabels": False, "ticks": "", "showline": False}


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
            **_BARE_AXIS,
            "constrain": "domain",
        }
        layout_extra[f"yaxis{ax}"] = {"range": [image_size, 0], **_BARE_AXIS, "scaleanchor": f"x{ax}"}
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
    layout_extra["coloraxis"] = _drop_coloraxis()
    return {"data": data, "layout": _layout(height, margin={"l": 8, "r": 8, "t": 48, "b": 8}, **layout_extra)}


def _drop_coloraxis() -> dict[str, Any]:
    """The colour axis all :func:`occlusion_maps` panels share: :data:`DROP_SCALE` on 0..1, a colour bar."""
    return {
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
    data = _distance_traces(xs, unit, layers, np.asarray(relative, dtype=np.float64))
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


def _distance_traces(
    xs: list[float], unit: str, layers: Sequence[str], rel: np.ndarray
) -> list[dict[str, Any]]:
    """The left panel of :func:`invariance_curves`: per layer, a thin line per image of ``rel``
    (``[L, B, A]``: layer, image, amount) and a thick one through their mean."""
    data: list[dict[str, Any]] = []
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
    return data


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
