"""Shared chart style: fonts and inks, the class / network / layer colours, and Plotly-safe text.

Plotly draws a subset of HTML inside its text (``<b>``, ``<br>``, ``<a href>``…) and decodes entities,
so every user string handed to it goes through :func:`plotly_text` first: a class named
``<img src=x onerror=alert(1)>`` then shows up as those characters, never as markup.

Colours: :func:`class_color` gives every class one colour everywhere (bars, heatmap ticks, the class
chips in HTML), from :data:`PALETTE` first, then spreading hues by the golden angle so neighbouring
class indices never look alike.
"""

from __future__ import annotations

from typing import Any

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


def network_color(index: int) -> str:
    """The colour of the ``index``-th network of a comparison (distinct from neighbouring class hues)."""
    return ("#2f5bd3", "#e07b39", "#1f9e89", "#b8409a", "#7a8b99", "#c9a227")[index % 6]


def layer_color(index: int, n: int) -> str:
    """The colour of the ``index``-th of ``n`` layers: light teal (shallow) to dark blue (deep)."""
    t = index / max(n - 1, 1)
    return f"hsl({180 + 45 * t:.0f}, {60 + 10 * t:.0f}%, {58 - 30 * t:.0f}%)"
