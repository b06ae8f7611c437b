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


@dataclass(frozen=True, slots=True)
class Chip:
    """A class name with its colour (:func:`sitegen.render.charts.class_color`) and its class page
    (a site path; "" for classes without one)."""

    index: int
    name: str
    color: str
    href: str = ""


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


__all__ = ["Chip", "Figure", "Img"]
