"""Network page: invariance curves under translation, rotation and scale (``invariance.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from sitegen.render import charts
from sitegen.render._models import Figure
from sitegen.render.sections import Files, NetworkPage
from sitegen.store.formats import InvarianceDoc

TITLE = "Invariance"
TEMPLATE = "_invariance.html"

_KIND_TITLES = {"translation": "Vertical translation", "rotation": "Rotation", "scale": "Scale"}


@dataclass(frozen=True, slots=True)
class View:
    figures: tuple[Figure, ...]
    note: str  # the layers compared


def network(doc: InvarianceDoc, page: NetworkPage, files: Files) -> View | None:
    names = [f"image {i} ({page.chips[c].name})" for i, c in zip(doc.images, doc.labels, strict=True)]
    figs = []
    for kind, k in doc.kinds.items():
        spec = charts.invariance_curves(
            _KIND_TITLES.get(kind, kind),
            k.unit,
            k.amounts,
            doc.layers,
            k.relative,
            k.true_prob,
            names,
            doc.labels,
        )
        figs.append(Figure(f"fig-invariance-{kind}", spec, 320))
    return View(tuple(figs), ", ".join(doc.layers)) if figs else None
