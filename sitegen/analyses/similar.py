"""Similar units (issue 15, item 6): each shown unit's most correlated units, numpy over ``activations.npy``.

For every shown unit of a layer, the ``k`` units with the highest Pearson correlation of per-image
maxima over the probe set (:func:`sitegen.analyses.similarity.top_correlated`), in the same layer
(itself left out) and in the next layer of the layer table. Constant units (one value on every image,
e.g. dead ones) have no correlation: they are listed per layer and never appear as similar. One layer
and its successor are read from the memory map at a time, in blocks of columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sitegen.analyses.registry import Context
from sitegen.analyses.similarity import Columns, column_stats, top_correlated
from sitegen.spec import SimilarSpec
from sitegen.store.formats import SimilarDoc, SimilarLayer, SimilarPeer, SimilarUnit

if TYPE_CHECKING:  # torch-free at run time
    from sitegen.mine import Mined

__all__ = ["KIND", "Params", "Result", "document", "layer_similar", "run", "save"]

KIND = "similar"
Params = SimilarSpec


@dataclass(frozen=True, slots=True)
class LayerSimilar:
    next: str | None
    constant: np.ndarray  # int [C]: constant units of this layer
    next_constant: int
    rows: np.ndarray  # shown units with a defined r
    same_units: np.ndarray  # [R, k] (-1 pad)
    same_r: np.ndarray  # [R, k] float32 (NaN pad)
    next_units: np.ndarray  # [R, k] or [R, 0]
    next_r: np.ndarray


@dataclass(frozen=True, slots=True)
class Result:
    k: int
    images: int
    layers: dict[str, LayerSimilar]
    top1: dict[str, np.ndarray]  # layer -> int64 [U]: rank-1 probe image of every unit (-1: none)


def layer_similar(
    x: Columns, shown: list[int], x_next: Columns | None, next_name: str | None, k: int
) -> LayerSimilar:
    """The similar units of one layer's shown units (``x`` ``[N, U]``, ``x_next`` ``[N, U']``)."""
    st = column_stats(x)
    rows = np.array([u for u in shown if 0 <= u < x.shape[1] and not st.constant[u]], dtype=np.int64)
    su, sr = top_correlated(x, rows, x, k, same=True, stats_a=st)
    nu = np.zeros((len(rows), 0), np.int64)
    nr = np.zeros((len(rows), 0), np.float32)
    n_const = 0
    if x_next is not None:
        sn = column_stats(x_next)
        n_const = int(sn.constant.sum())
        nu, nr = top_correlated(x, rows, x_next, k, same=False, stats_a=st, stats_b=sn)
    return LayerSimilar(next_name, np.flatnonzero(st.constant), n_const, rows, su, sr, nu, nr)


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    acts = mined.activations
    if acts is None:  # analyses.activations.enabled: false
        return None
    names = [name for name in mined.layers if name in acts.offsets]
    out = {}
    for i, name in enumerate(names):
        shown = ctx.shown.get(name, [])
        if not shown:
            continue
        nxt = names[i + 1] if i + 1 < len(names) else None
        x_next = acts.layer(nxt) if nxt is not None else None  # read in blocks of columns (pread)
        out[name] = layer_similar(acts.layer(name), list(shown), x_next, nxt, params.k)
        ctx.progress("similar", i + 1, len(names))
    top1 = {name: np.asarray(mined.layers[name].images[:, 0], np.int64) for name in names}
    return Result(k=params.k, images=len(mined.labels), layers=out, top1=top1)


def save(ctx: Context, result: Result, out: Path) -> SimilarDoc:
    return document(result)


def _peers(units: np.ndarray, r: np.ndarray, top1: np.ndarray) -> list[SimilarPeer]:
    return [
        SimilarPeer(unit=int(u), r=round(float(v), 4), image=int(top1[u]) if 0 <= u < len(top1) else -1)
        for u, v in zip(units.tolist(), r.tolist(), strict=True)
        if u >= 0
    ]


def document(result: Result) -> SimilarDoc:
    """The stored document (also what the test fixture writes)."""
    layers = {}
    for name, s in result.layers.items():
        top_here = result.top1[name]
        top_next = result.top1.get(s.next, np.zeros(0, np.int64)) if s.next else np.zeros(0, np.int64)
        units = {
            str(int(u)): SimilarUnit(
                same=_peers(s.same_units[i], s.same_r[i], top_here),
                next=_peers(s.next_units[i], s.next_r[i], top_next),
            )
            for i, u in enumerate(s.rows)
        }
        layers[name] = SimilarLayer(
            next=s.next,
            constant=[int(u) for u in s.constant],
            next_constant=s.next_constant,
            units=units,
        )
    return SimilarDoc(k=result.k, images=result.images, layers=layers)
