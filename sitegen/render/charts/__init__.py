"""Plotly figures as plain dicts (``{"data": [...], "layout": {...}}``), embedded with ``|tojson``.

No plotly.py objects: the figures are small JSON documents drawn by the shared ``assets/plotly.min.js``
(``app.js`` calls ``Plotly.newPlot``), which keeps rendering fast and the output byte-stable.

Plotly draws a subset of HTML inside its text (``<b>``, ``<br>``, ``<a href>``…) and decodes entities,
so every user string handed to it goes through :func:`plotly_text` first: a class named
``<img src=x onerror=alert(1)>`` then shows up as those characters, never as markup.

Colours: :func:`class_color` gives every class one colour everywhere (bars, heatmap ticks, the class
chips in HTML), spreading hues by the golden angle so neighbouring class indices never look alike.

One module a job: :mod:`.style` (palette, colours, Plotly-safe text), :mod:`._base` (the shared
layout), :mod:`.preference`, :mod:`.training`, :mod:`.evolution`, :mod:`.techniques`,
:mod:`.distributions` (the figure builders by topic), :mod:`.alt_text` (:func:`describe`) and
:mod:`.shared` (layouts written once per site, issue 13). This package re-exports their public names:
``from sitegen.render import charts; charts.class_color(0)``.
"""

from __future__ import annotations

from sitegen.render.charts.alt_text import describe
from sitegen.render.charts.distributions import (
    activation_histogram,
    density_correlation,
    density_histogram,
    density_scatter,
)
from sitegen.render.charts.evolution import diff_overlap, stability_curves
from sitegen.render.charts.preference import class_preference, preference_comparison, rank_histograms
from sitegen.render.charts.shared import LAYOUTS, layouts_script, merge, payload
from sitegen.render.charts.style import (
    ACCENT,
    FONT,
    GRID,
    INK,
    MANY_CLASSES,
    METHOD_NAMES,
    PALETTE,
    SYMBOLS,
    Chart,
    class_color,
    class_symbol,
    layer_color,
    method_name,
    network_color,
    plotly_text,
)
from sitegen.render.charts.techniques import (
    DROP_SCALE,
    cka_heatmap,
    embedding_scatter,
    invariance_curves,
    occlusion_maps,
)
from sitegen.render.charts.training import (
    checkpoint_accuracy,
    confusion_heatmap,
    network_accuracy,
    per_class_accuracy,
    training_comparison,
    training_curves,
)

__all__ = [
    "ACCENT",
    "DROP_SCALE",
    "FONT",
    "GRID",
    "INK",
    "LAYOUTS",
    "MANY_CLASSES",
    "METHOD_NAMES",
    "PALETTE",
    "SYMBOLS",
    "Chart",
    "activation_histogram",
    "checkpoint_accuracy",
    "cka_heatmap",
    "class_color",
    "class_preference",
    "class_symbol",
    "confusion_heatmap",
    "density_correlation",
    "density_histogram",
    "density_scatter",
    "describe",
    "diff_overlap",
    "embedding_scatter",
    "invariance_curves",
    "layer_color",
    "layouts_script",
    "merge",
    "method_name",
    "network_color",
    "network_accuracy",
    "occlusion_maps",
    "payload",
    "per_class_accuracy",
    "plotly_text",
    "preference_comparison",
    "rank_histograms",
    "stability_curves",
    "training_comparison",
    "training_curves",
]
