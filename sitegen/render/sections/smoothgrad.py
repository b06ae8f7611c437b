"""Network page: SmoothGrad beside the plain gradient (``smoothgrad.json``; Smilkov et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from sitegen.render._models import Chip, Img
from sitegen.render.sections import Files, NetworkPage
from sitegen.store.formats import SmoothGradDoc

TITLE = "SmoothGrad"
TEMPLATE = "_smoothgrad.html"
SIZE = 200  # CSS px, as Grad-CAM's


@dataclass(frozen=True, slots=True)
class Row:
    index: int
    label: Chip
    predicted: Chip
    correct: bool
    image: Img
    plain: Img
    smooth: Img


@dataclass(frozen=True, slots=True)
class View:
    samples: int
    noise: str  # "15%"
    rows: tuple[Row, ...]


def network(doc: SmoothGradDoc, page: NetworkPage, files: Files) -> View | None:
    rows = []
    for e in doc.images:
        cls = page.chips[e.label]
        imgs = {
            which: Img(
                files.file(rel, f"{files.base}smoothgrad/{PurePosixPath(rel).name}"),
                SIZE,
                SIZE,
                f"{title} of {cls.name} on probe image {e.index}",
            )
            for which, rel, title in (
                ("plain", e.plain_png, "Gradient"),
                ("smooth", e.smooth_png, "SmoothGrad"),
            )
        }
        rows.append(
            Row(
                index=e.index,
                label=cls,
                predicted=page.chips[e.predicted],
                correct=e.label == e.predicted,
                image=page.image(e.index, SIZE),
                plain=imgs["plain"],
                smooth=imgs["smooth"],
            )
        )
    return View(doc.samples, f"{doc.noise * 100:.0f}%", tuple(rows)) if rows else None
