"""Layer and unit pages: feature visualizations (``featvis.json`` + one WebP per unit)."""

from __future__ import annotations

from dataclasses import dataclass

from sitegen.render._models import Img
from sitegen.render.sections import Files, LayerPage, UnitPage
from sitegen.store.formats import FeatVisDoc

TITLE = "Feature visualization"
TEMPLATE = "_featvis.html"
# CSS px, sized for a projector at 1920 px (issue 14); stylesheets may scale them down on phones
SIZE = 256  # on the unit page
TILE = 112  # on the layer page grid


@dataclass(frozen=True, slots=True)
class FeatVisTile:
    unit: int
    href: str
    img: Img
    gain: str


@dataclass(frozen=True, slots=True)
class UnitView:
    img: Img
    note: str


def _img(files: Files, layer: str, folder: str, unit: int, size: int) -> Img:
    src = files.file(FeatVisDoc.image(layer, unit), f"{folder}unit-{unit:04d}-fv.webp")
    return Img(src, size, size, f"unit {unit}: image optimized to excite it")


def layer(doc: FeatVisDoc, page: LayerPage, files: Files) -> tuple[FeatVisTile, ...] | None:
    info = doc.layers.get(page.layer)
    if info is None or not info.units:
        return None
    return tuple(
        FeatVisTile(u, page.unit_href(u), _img(files, page.layer, page.folder, u, TILE), f"{o:.3g}")
        for u, o in zip(info.units, info.objective, strict=True)
    )


def unit(doc: FeatVisDoc, page: UnitPage, files: Files) -> UnitView | None:
    info = doc.layers.get(page.layer)
    if info is None or page.unit not in info.units:
        return None
    j = info.units.index(page.unit)
    note = f"mean activation {info.start_objective[j]:.3g} → {info.objective[j]:.3g} after {doc.steps} steps"
    note += f" ({doc.param}, {doc.size} px)"
    return UnitView(_img(files, page.layer, page.folder, page.unit, SIZE), note)
