"""Text alternatives of charts (issue 14: charts need an accessible name and a text alternative)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sitegen.render.charts.style import Chart


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
