"""View models shared by :mod:`sitegen.render.views` and :mod:`sitegen.render.sections`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Img:
    """An image file of the site, with its display size in CSS px."""

    src: str
    width: int
    height: int
    alt: str


def class_css(index: int) -> str:
    """The CSS class that paints class ``index``'s colour: the site's ``assets/style.css`` ends with
    one rule per class of its datasets (``.c7{--c:…}``, :mod:`sitegen.render.assets`; issue 13)."""
    return f"c{index}"


@dataclass(frozen=True, slots=True)
class Chip:
    """A class name with its colour (:func:`sitegen.render.charts.class_color`) and its class page
    (a site path; "" for classes without one). ``css``: its :func:`class_css` when the site stylesheet
    has the colour (a dataset's classes); "" paints ``color`` inline."""

    index: int
    name: str
    color: str
    href: str = ""
    css: str = ""


@dataclass(frozen=True, slots=True)
class Figure:
    """A Plotly figure: a stable DOM id, its JSON spec and its height in px.

    ``label`` and ``description`` are the chart's accessible name and text alternative, read from the
    spec (:func:`sitegen.render.charts.describe`).
    """

    id: str
    spec: dict[str, Any]
    height: int

    @property
    def label(self) -> str:
        from sitegen.render.charts import describe

        return describe(self.spec)[0]

    @property
    def description(self) -> str:
        from sitegen.render.charts import describe

        return describe(self.spec)[1]

    @property
    def payload(self) -> dict[str, Any]:
        """What the page embeds: the spec less the layout it shares with other pages (issue 13)."""
        from sitegen.render.charts import payload

        return payload(self.spec)


__all__ = ["Chip", "Figure", "Img", "class_css"]
