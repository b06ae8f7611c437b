"""Unit pages: the empirical receptive field with the analytic RF box over it (``erf.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from sitegen.render._models import Img
from sitegen.render.sections import Files, UnitPage
from sitegen.store.formats import ErfDoc

TITLE = "Empirical receptive field"
TEMPLATE = "_erf.html"
SIZE = 224  # CSS px of the map


@dataclass(frozen=True, slots=True)
class UnitView:
    img: Img
    box: tuple[str, str]  # (offset %, size %) of the analytic RF square inside the map
    note: str


def unit(doc: ErfDoc, page: UnitPage, files: Files) -> UnitView | None:
    e = doc.layers.get(page.layer, {}).get(str(page.unit))
    if e is None:
        return None
    src = files.file(e.png, f"{page.folder}unit-{page.unit:04d}-erf.png")
    s, a = e.map_size, e.analytic_size
    box = (f"{100 * (s - a) / 2 / s:.2f}%", f"{100 * a / s:.2f}%")
    note = (
        f"{e.effective_size:.0f} px holds {e.mass * 100:.0f}% of the discrepancy "
        f"(analytic RF {a} px; map {s} px, {e.images} images, occluder {doc.occluder} px)"
    )
    return UnitView(Img(src, SIZE, SIZE, f"unit {page.unit}: empirical receptive field"), box, note)
