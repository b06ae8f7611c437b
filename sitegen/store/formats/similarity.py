"""Documents of similarity (issue 15, item 6): correlated units, and linear CKA between networks."""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from sitegen.store.formats.base import AnalysisDoc, _Part

__all__ = ["CkaDoc", "CkaPair", "SimilarDoc", "SimilarLayer", "SimilarPeer", "SimilarUnit"]


# --- similar.json (issue 15, item 6) -----------------------------------------------------------------


class SimilarPeer(_Part):
    """A unit correlated with a shown unit: its index, Pearson r and its rank-1 probe image."""

    unit: int
    r: float
    image: int  # its rank-1 probe image (-1: none), for the thumbnail


class SimilarUnit(_Part):
    same: list[SimilarPeer]  # the same layer, highest r first (itself left out)
    next: list[SimilarPeer]  # the next layer of the layer table (empty for the last layer)


class SimilarLayer(_Part):
    next: str | None  # the next layer's name (None: the last layer)
    constant: list[int]  # units with one value on every probe image (e.g. dead): r undefined
    next_constant: int  # how many of the next layer's units are constant (never listed)
    units: dict[str, SimilarUnit]  # shown units with a defined r, keyed by index as a string


class SimilarDoc(AnalysisDoc):
    """Most correlated units (Pearson over the probe images of per-image maxima) of each shown unit."""

    KIND: ClassVar[str] = "similar"
    k: int
    images: int  # probe images N the correlations run over
    layers: dict[str, SimilarLayer]

    def probe_images(self) -> list[int]:
        return sorted(
            {
                p.image
                for lay in self.layers.values()
                for e in lay.units.values()
                for p in (*e.same, *e.next)
                if p.image >= 0
            }
        )


# --- store/compare/<dataset>/cka.json (issue 15, item 6) -----------------------------------------------


class CkaPair(_Part):
    """Linear CKA between every layer of side ``a`` (rows) and of side ``b`` (columns)."""

    a: str  # "net@checkpoint"
    b: str
    layers_a: list[str]
    layers_b: list[str]
    cka: list[list[float | None]]  # [len(layers_a)][len(layers_b)], None: undefined (constant layer)

    @model_validator(mode="after")
    def _shape(self) -> CkaPair:
        if len(self.cka) != len(self.layers_a) or any(len(r) != len(self.layers_b) for r in self.cka):
            raise ValueError("cka is not len(layers_a) x len(layers_b)")
        return self


class CkaDoc(AnalysisDoc):
    """Linear CKA (Kornblith et al. 2019) between the networks of one dataset, on its probe set; the
    features of a layer are its units' per-image maxima (spatially max-pooled maps). Not a registered
    kind: the build writes it per dataset once every network's entry exists."""

    KIND: ClassVar[str] = "cka"
    dataset: str
    images: int
    keys: dict[str, str]  # "net@checkpoint" -> its entry's cache key (the doc is reused while they hold)
    pairs: list[CkaPair]
