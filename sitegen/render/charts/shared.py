"""Layouts that the figures of many pages share, written once per site (issue 13, item 4: site size).

Every unit page's activation histogram carried some 2 KB of layout (fonts, colours, margins, axis
styling) that is the same on every unit page. Now a page embeds :func:`payload`: the figure's data,
the name of a shared layout (``"shared"``) and only what its own layout adds to it; the site's
``assets/app.js`` starts with every shared layout once (:func:`layouts_script`) and ``app.js``
(``figureFor``) merges them back, as :func:`merge` does, before ``Plotly.newPlot``. A figure names its
layout in ``spec["shared"]`` (:func:`activation_layout`); any other figure is tried against
``"base"``, the style every chart starts from (``_base._layout`` without the parts charts override).

``Figure.spec`` stays the whole figure: the text alternative (:func:`~.alt_text.describe`) and tests read
it. A layout that merging cannot reproduce exactly (a key of the shared layout missing from it) is
embedded whole: :func:`payload` checks ``merge(shared, delta) == layout`` for every figure.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from sitegen.render.charts._base import _layout
from sitegen.render.charts.style import Chart

__all__ = ["LAYOUTS", "activation_layout", "layouts_script", "merge", "payload"]


def _base() -> dict[str, Any]:
    # The part of _layout() no chart replaces: _layout merges overrides one level deep, so a chart's
    # xaxis={"title": ...} replaces the axis title (and its font) but keeps the axis colours.
    layout = _layout(0)
    del layout["height"], layout["bargap"]
    for axis in ("xaxis", "yaxis"):
        del layout[axis]["title"]
    return layout


#: name -> layout. "activation": the unit pages' histogram of the unit's per-image maxima
#: (``distributions.activation_histogram``, issue 15).
LAYOUTS: dict[str, dict[str, Any]] = {
    "base": _base(),
    "activation": _layout(
        260,
        bargap=0.02,
        xaxis={"title": {"text": "the unit's maximum per image"}},
        yaxis={"title": {"text": "probe images"}, "rangemode": "tozero"},
    ),
}


def activation_layout() -> dict[str, Any]:
    """A fresh copy of the shared ``"activation"`` layout, for the histogram to add to."""
    return copy.deepcopy(LAYOUTS["activation"])


def merge(shared: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` merged into a copy of ``shared``: objects key by key, anything else (values, arrays)
    replaced. The same as ``mergeLayout`` in ``app.js``."""
    out = copy.deepcopy(shared)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _delta(layout: dict[str, Any], shared: dict[str, Any]) -> dict[str, Any] | None:
    """What ``layout`` adds to ``shared`` (None: it lacks a key of ``shared``, merging cannot drop one)."""
    if any(key not in layout for key in shared):
        return None
    out: dict[str, Any] = {}
    for key, value in layout.items():
        base = shared.get(key)
        if isinstance(value, dict) and isinstance(base, dict):
            sub = _delta(value, base)
            if sub is None:
                return None
            if sub:
                out[key] = sub
        elif key not in shared or value != base:
            out[key] = value
    return out


def payload(spec: Chart) -> Chart:
    """What a page embeds for the figure ``spec``: ``{"data", "shared": name, "layout": delta}``, or the
    figure without its ``shared`` key when no shared layout fits it."""
    layout = spec.get("layout", {})
    name = spec.get("shared", "base")
    whole = {k: v for k, v in spec.items() if k != "shared"}
    shared = LAYOUTS.get(name)
    if shared is None:
        raise ValueError(f"no shared layout {name!r}; known: {sorted(LAYOUTS)}")
    delta = _delta(layout, shared)
    if delta is None or merge(shared, delta) != layout:
        return whole
    return {**whole, "shared": name, "layout": delta}


def layouts_script() -> str:
    """The line the site's ``assets/app.js`` starts with: ``window.SITEGEN_LAYOUTS={name: layout…};``."""
    text = json.dumps(LAYOUTS, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"window.SITEGEN_LAYOUTS={text};\n"
