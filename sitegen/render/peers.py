"""Links to other units of a checkpoint from a unit page: their page and a rank-1 thumbnail.

A section that names other units (similar units, issue 15) gets :attr:`UnitPage.peer`, a
:class:`PeerFinder`: ``peer(layer, unit, image)`` -> :class:`Peer`. The thumbnail is the unit's rank-1
receptive-field patch cut from its sprite (CSS background, as on unit pages) when it has a page and a
patches panel, else its rank-1 probe image (``image``, from the section's document).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sitegen.render._models import Img
from sitegen.store.manifest import CheckpointManifest, SpriteLayout

__all__ = ["Peer", "PeerFinder"]


@dataclass(frozen=True, slots=True)
class Peer:
    """Another unit of the checkpoint as a unit page shows it (site paths; "" where absent)."""

    layer: str
    unit: int
    href: str  # its unit page ("" without one)
    sprite: str  # its sprite, when the thumbnail is a cell of it
    size: str  # CSS background-size of the cell
    position: str  # CSS background-position of the cell ("": 0% 0%, the CSS default; issue 13)
    img: Img | None  # else its rank-1 probe image (None: no image)


class PeerFinder:
    """Resolves (layer, unit) of one checkpoint to a :class:`Peer`.

    Args:
        base: site folder of the checkpoint's pages (``"net/"``).
        layer_slugs: layer -> its folder name.
        manifest: the checkpoint's manifest (shown units, sprite layouts).
        layout: layer -> its checked sprite layout (None: no sprites).
        image: (probe index, display px) -> the probe image.
        cell: (layout, rank, panel index) -> (CSS size, CSS position) of that cell.
        size: thumbnail px.
    """

    def __init__(
        self,
        *,
        base: str,
        layer_slugs: Mapping[str, str],
        manifest: CheckpointManifest,
        layout: Callable[[str], SpriteLayout | None],
        image: Callable[[int, int], Img],
        cell: Callable[[SpriteLayout, int, int], tuple[str, str]],
        size: int = 48,
    ) -> None:
        self._base, self._slugs = base, layer_slugs
        self._layout, self._image, self._cell = layout, image, cell
        self._shown: dict[str, set[int]] = {k: set(v) for k, v in manifest.shown_units.items()}
        self._layouts: dict[str, SpriteLayout | None] = {}
        self.size = size

    def _lay(self, layer: str) -> SpriteLayout | None:
        if layer not in self._layouts:
            self._layouts[layer] = self._layout(layer)
        return self._layouts[layer]

    def __call__(self, layer: str, unit: int, image: int) -> Peer:
        shown = unit in self._shown.get(layer, set()) and layer in self._slugs
        folder = f"{self._base}{self._slugs[layer]}/" if shown else ""
        href = f"{folder}unit-{unit:04d}.html" if shown else ""
        lay = self._lay(layer) if shown else None
        if lay is not None and "patches" in lay.panels:
            size, position = self._cell(lay, 0, lay.panels.index("patches"))
            position = "" if position == "0% 0%" else position
            return Peer(layer, unit, href, f"{folder}unit-{unit:04d}.webp", size, position, None)
        img = self._image(image, self.size) if image >= 0 else None
        return Peer(layer, unit, href, "", "", "", img)


def panel_cell(
    cells: Callable[[SpriteLayout, int], Sequence],
) -> Callable[[SpriteLayout, int, int], tuple[str, str]]:
    """Adapt ``sprites.sprite_cells`` (layout, rank) -> cells to (layout, rank, panel) -> (size, position)."""

    def cell(lay: SpriteLayout, rank: int, panel: int) -> tuple[str, str]:
        c = cells(lay, rank)[panel]
        return c.size, c.position

    return cell
