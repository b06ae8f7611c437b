"""Network page: occlusion sensitivity maps over the probe images (``occlusion.json``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sitegen.render import charts
from sitegen.render._models import Chip, Figure
from sitegen.render.sections import Files, NetworkPage
from sitegen.store.formats import OcclusionDoc

TITLE = "Occlusion"
TEMPLATE = "_occlusion.html"
SIZE = 200  # CSS px of the probe image under the maps


@dataclass(frozen=True, slots=True)
class OcclusionView:
    index: int
    label: Chip
    predicted: Chip
    correct: bool
    unit: int
    unit_href: str
    max_drops: tuple[str, str, str]  # true-class p, predicted p, unit activation (relative)
    figure: Figure


@dataclass(frozen=True, slots=True)
class View:
    note: str
    images: tuple[OcclusionView, ...]


def network(doc: OcclusionDoc, page: NetworkPage, files: Files) -> View | None:
    out = []
    chips = page.chips
    for j, e in enumerate(doc.images):
        img = page.image(e.index, SIZE)
        panels, drops = [], []
        for name, base, z, relative in (
            (f"p({chips[e.label].name})", e.base_true_prob, e.true_prob, False),
            (f"p({chips[e.predicted].name})", e.base_pred_prob, e.pred_prob, False),
            (f"{doc.layer} unit {e.unit}", e.base_activation, e.activation, True),
        ):
            values = np.asarray(z, dtype=np.float64)
            drop = (base - values) / (base if base > 0 else 1.0) if relative else base - values
            worst = max(0.0, float(drop.max())) if drop.size else 0.0
            drops.append(worst)
            if relative:
                title = f"{name}: max drop {worst * 100:.0f}% of {base:.3g}"
            else:
                title = f"{name}: max drop {worst:.2f} from {base:.2f}"
            panels.append((title, np.round(drop, 4).tolist(), z, "activation" if relative else "p"))
        fig = charts.occlusion_maps(page.page_root + img.src, page.input_size, doc.rows, doc.cols, panels)
        out.append(
            OcclusionView(
                index=e.index,
                label=chips[e.label],
                predicted=chips[e.predicted],
                correct=e.label == e.predicted,
                unit=e.unit,
                unit_href=page.unit_href(doc.layer, e.unit),
                max_drops=(f"{drops[0]:.2f}", f"{drops[1]:.2f}", f"{drops[2] * 100:.0f}%"),
                figure=Figure(f"fig-occlusion-{j}", fig, 380),
            )
        )
    if not out:
        return None
    return View(f"{doc.size} px grey square, stride {doc.stride} px; unit of {doc.layer}", tuple(out))
