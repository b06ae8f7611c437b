"""Unit sprites as CSS: what a panel is called under a cell, and where a cell sits in its sprite."""

from __future__ import annotations

from collections.abc import Sequence

from sitegen.render.views.models import SpriteCell
from sitegen.store.manifest import SpriteLayout

# How sprite panel names (store) read under a single cell (page).
PANEL_LABELS = {
    "patches": "patch",
    "deconvnet": "deconvnet",
    "guided": "guided backprop",
    "gradient": "gradient",
}


def sprite_cells(sprite: SpriteLayout, rank: int, n_panels: int | None = None) -> tuple[SpriteCell, ...]:
    """The cells of 0-based ``rank`` in each panel of a sprite (the first ``n_panels`` panels), as CSS
    background-size/position in percent, so a cell scales to any display size."""
    row, col = divmod(rank, sprite.cols)
    n_cols = len(sprite.panels) * sprite.cols
    size_css = f"{n_cols * 100}% {sprite.rows * 100}%"
    y = f"{100 * row / (sprite.rows - 1):.4g}%" if sprite.rows > 1 else "0%"
    return tuple(
        SpriteCell(
            PANEL_LABELS.get(panel, panel),
            size_css,
            f"{100 * (p * sprite.cols + col) / (n_cols - 1):.4g}% {y}" if n_cols > 1 else f"0% {y}",
            p,
        )
        for p, panel in enumerate(sprite.panels[:n_panels])
    )


#: Issue 13 (site size): style.css places the unit page's cells of a sprite with this many columns
#: (top-k 5..9; the default 9) and at most PLACED_PANELS panels: the entry's rank by nth-child, the panel
#: by class (``p1``..), the sprite's extent by :func:`placement_vars`. Others carry their position inline.
PLACED_COLS = 3
PLACED_PANELS = 4


def is_placed(sprite: SpriteLayout | None, ranks: Sequence[int]) -> bool:
    """Whether style.css places the cells of entries of these 1-based ranks (in page order)."""
    return (
        sprite is not None
        and sprite.cols == PLACED_COLS
        and len(sprite.panels) <= PLACED_PANELS
        and list(ranks) == list(range(1, len(ranks) + 1))
    )


def placement_vars(sprite: SpriteLayout) -> str:
    """The custom properties style.css's cell rule divides by: the sprite's last column and row index."""
    return f"--nx:{max(len(sprite.panels) * sprite.cols - 1, 1)};--ny:{max(sprite.rows - 1, 1)}"


def panels_alt(panels: Sequence[str], k: int) -> str:
    """Alt text of a sprite by its panels' names: "top-9 patches and deconvnet reconstructions"."""
    names = {"patches": "patches", "deconvnet": "deconvnet reconstructions", "guided": "guided backprop"}
    return f"top-{k} " + " and ".join(names.get(p, p) for p in panels)
