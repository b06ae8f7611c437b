"""Network page: the 2-D embedding of the probe set's penultimate features (``embedding.json``)."""

from __future__ import annotations

from dataclasses import dataclass

from sitegen.render import charts
from sitegen.render._models import Figure
from sitegen.render.sections import Files, NetworkPage
from sitegen.store.formats import EmbeddingDoc

TITLE = "Embedding"
TEMPLATE = "_embedding.html"


@dataclass(frozen=True, slots=True)
class View:
    figure: Figure
    note: str


def network(doc: EmbeddingDoc, page: NetworkPage, files: Files) -> View:
    spec = charts.embedding_scatter(
        doc.x, doc.y, doc.labels, doc.predicted, page.class_names, method=doc.method
    )
    note = (
        f"{charts.method_name(doc.method)} of the {doc.dim}-dimensional penultimate features "
        f"of {len(doc.x)} images"
    )
    return View(Figure("fig-embedding", spec, 540), note)
