"""Unit pages: the most correlated units in the same and the next layer (``similar.json``, issue 15).

Each listed unit links to its page when it has one and shows its rank-1 patch (a cell of its sprite)
or, without a patch, its rank-1 probe image (:class:`sitegen.render.peers.Peer`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sitegen.render.peers import Peer
from sitegen.render.sections import Files, UnitPage
from sitegen.store.formats import SimilarDoc, SimilarPeer

TITLE = "Similar units"
TEMPLATE = "_similar.html"


@dataclass(frozen=True, slots=True)
class Listed:
    peer: Peer | None  # None without a resolver (no thumbnail, no link)
    label: str  # "conv3 #0017"
    r: str  # "0.83"
    bar: float  # |r| in percent, for the meter


@dataclass(frozen=True, slots=True)
class Group:
    title: str  # "in conv2 (same layer)"
    units: tuple[Listed, ...]
    note: str  # e.g. "3 constant units of conv3 are never listed"


@dataclass(frozen=True, slots=True)
class UnitView:
    groups: tuple[Group, ...]
    note: str


def _listed(page: UnitPage, layer: str, peers: list[SimilarPeer]) -> tuple[Listed, ...]:
    out = []
    for p in peers:
        peer = page.peer(layer, p.unit, p.image) if page.peer is not None else None
        out.append(Listed(peer, f"{layer} #{p.unit:04d}", f"{p.r:.2f}", round(100 * min(1.0, abs(p.r)), 1)))
    return tuple(out)


def unit(doc: SimilarDoc, page: UnitPage, files: Files) -> UnitView | None:
    lay = doc.layers.get(page.layer)
    if lay is None:
        return None
    u = page.unit
    e = lay.units.get(str(u))
    method = (
        f"Pearson correlation of the units' maxima over the {doc.images:,} probe images (one value per "
        "unit and image: the spatially max-pooled map)."
    )
    if e is None:
        if u in lay.constant:
            note = "This unit has the same value on every probe image (dead or constant): its "
            return UnitView((), note + "correlation with any unit is undefined.")
        return None
    same_note = (
        f"{len(lay.constant)} constant unit{'s' if len(lay.constant) != 1 else ''} of {page.layer} "
        "(r undefined) left out."
        if lay.constant
        else ""
    )
    groups = [Group(f"in {page.layer} (same layer)", _listed(page, page.layer, e.same), same_note)]
    if lay.next is not None:
        nc = lay.next_constant
        next_note = f"{nc} constant unit{'s' if nc != 1 else ''} of {lay.next} left out." if nc else ""
        groups.append(Group(f"in {lay.next} (next layer)", _listed(page, lay.next, e.next), next_note))
    return UnitView(tuple(groups), method)
