"""Network and layer pages: stroke density vs class preference (``stroke.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from sitegen.render import charts
from sitegen.render._models import Figure
from sitegen.render.sections import Files, LayerPage, NetworkPage
from sitegen.store.formats import StrokeDoc

TITLE = "Stroke density"
TEMPLATE = "_stroke.html"


@dataclass(frozen=True, slots=True)
class View:
    correlation: Figure  # Spearman rho per layer
    overall: Figure  # the classes' density against the overall preference
    note: str


def _label(doc: StrokeDoc) -> str:
    return "ink density" if doc.kind == "sketch" else "edge density"


def network(doc: StrokeDoc, page: NetworkPage, files: Files) -> View:
    label = _label(doc)
    rd, rc = doc.rho_density, doc.rho_complexity
    corr = charts.density_correlation(
        page.layers,
        [rd.get(lay) for lay in page.layers],
        [rc.get(lay) for lay in page.layers],
        density_label=label,
    )
    scatter = charts.density_scatter(
        doc.density,
        page.overall,
        page.class_names,
        x_title=f"{label} of the class (%)",
        y_title="mean share of a layer's score (%)",
        rho=doc.rho_overall,
    )
    note = (
        f"{label}: share of {'non-background' if doc.kind == 'sketch' else 'edge'} pixels per image, "
        "averaged per class over the probe set; complexity: mean PNG-compressed size"
    )
    return View(Figure("fig-stroke-corr", corr, 320), Figure("fig-stroke-overall", scatter, 360), note)


def layer(doc: StrokeDoc, page: LayerPage, files: Files) -> Figure:
    spec = charts.density_scatter(
        doc.density,
        page.weighted,
        page.class_names,
        x_title=f"{_label(doc)} of the class (%)",
        rho=doc.rho_density.get(page.layer),
    )
    return Figure("fig-stroke", spec, 360)
