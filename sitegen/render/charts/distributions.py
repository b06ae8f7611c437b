"""Distribution charts: class preference against stroke density, and unit activation / density histograms."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sitegen.render.charts._base import _TOP_LEGEND, _layout, _round
from sitegen.render.charts.shared import activation_layout
from sitegen.render.charts.style import ACCENT, Chart, class_color, plotly_text


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
    """One unit's per-image maxima: equal-width bins over [lo, hi] (issue 15), as bars.

    Its layout is the shared ``"activation"`` one (:mod:`.shared`): pages embed only the data, the height
    when it differs and the threshold line."""
    bins = max(len(counts), 1)
    width = (hi - lo) / bins if hi > lo else 1.0
    centres = [lo + (i + 0.5) * width for i in range(len(counts))]
    layout = activation_layout()
    layout["height"] = height
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
        "shared": "activation",
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
