"""Network page: Grad-CAM of the true and the predicted class (``gradcam.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from sitegen.render._models import Chip, Img
from sitegen.render.sections import Files, NetworkPage
from sitegen.store.formats import GradCamDoc

TITLE = "Grad-CAM"
TEMPLATE = "_gradcam.html"
SIZE = 200  # CSS px, sized for a projector at 1920 px (issue 14)


@dataclass(frozen=True, slots=True)
class GradCamRow:
    image: Img
    index: int
    label: Chip
    predicted: Chip
    correct: bool
    true_prob: str
    pred_prob: str
    true_map: Img
    pred_map: Img


@dataclass(frozen=True, slots=True)
class View:
    layer: str
    rows: tuple[GradCamRow, ...]


def network(doc: GradCamDoc, page: NetworkPage, files: Files) -> View | None:
    rows = []
    for e in doc.images:
        maps = {}
        for which, rel, cls in (("true", e.true_png, e.label), ("pred", e.pred_png, e.predicted)):
            src = files.file(rel, f"{files.base}gradcam/{PurePosixPath(rel).name}")
            maps[which] = Img(src, SIZE, SIZE, f"Grad-CAM of {page.chips[cls].name} on probe image {e.index}")
        rows.append(
            GradCamRow(
                image=page.image(e.index, SIZE),
                index=e.index,
                label=page.chips[e.label],
                predicted=page.chips[e.predicted],
                correct=e.label == e.predicted,
                true_prob=f"{e.true_prob * 100:.1f}%",
                pred_prob=f"{e.pred_prob * 100:.1f}%",
                true_map=maps["true"],
                pred_map=maps["pred"],
            )
        )
    return View(doc.layer, tuple(rows)) if rows else None
