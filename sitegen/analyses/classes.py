"""Which units prefer each class (issue 15, item 4: class pages), numpy over the mined tables.

For every layer, the units with pages (``ctx.shown``) are ranked per class twice:

- **share**: the rank-weighted share of the class among the unit's top-k images, with the class
  histograms' weighting (:mod:`sitegen.analyses.class_hist`): the rank-r image weighs ``k + 1 - r``,
  divided by the total weight of the unit's filled slots, so a unit's shares sum to 1 (empty
  slots, image -1, are left out). A unit whose top-k are all of the class scores 1. A unit whose
  top-k values are all equal (dead, or constant: its top-k are mining's tie-break, the lowest image
  indices, i.e. the first class) is not ranked.
- **selectivity** (Morcos et al. 2018, eq. 1): ``(μ_max − μ_−max) / (μ_max + μ_−max)`` over the
  unit's class means of its per-image maxima (``activations.npy``, read in blocks of columns),
  with the same functions as the distribution kind
  (:func:`sitegen.analyses.distribution.class_means`, ``selectivity``), so the value is the one
  the unit and layer pages show. A unit is listed under its *top* class (the class
  of ``μ_max``, ties: the lower class index), when its selectivity is > 0 (a dead unit, all means 0,
  is listed nowhere). Defined for rectified layers (every value ≥ 0, prob included), as there;
  absent without the activations file.

Per class and layer the best ``units`` of each ranking are kept, best first; ties go to the lower
unit index. Render merges these lists over layers and networks (the best 12 overall are exact
when ``units`` ≥ 12). Torch-free. Cost at seed scale
(3,040 images, ~2,300 shown units): well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sitegen.analyses.distribution import class_means, selectivity
from sitegen.analyses.registry import Context
from sitegen.spec import ClassesSpec
from sitegen.store.formats import ClassesDoc, ClassesLayer, ClassRanking

if TYPE_CHECKING:  # torch-free at run time: the test fixture writes its document with these functions
    from sitegen.mine import LayerColumns, Mined

__all__ = [
    "KIND",
    "Params",
    "Ranking",
    "Result",
    "best_units",
    "document",
    "flat_topk",
    "layer_rankings",
    "run",
    "save",
    "top_class_selectivity",
    "unit_shares",
]

KIND = "classes"
Params = ClassesSpec
_BLOCK = 1 << 22  # float32 values per block of columns (16 MB), as in the distribution kind


def unit_shares(topk_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``float64[U, C]``: each unit's rank-weighted class shares of its top-k images.

    Args:
        topk_labels: ``int[U, k]``, the class of each unit's rank-1..k image; -1 = empty slot.
        num_classes: C.

    Example:
        >>> unit_shares(np.array([[0, 1, 0], [2, -1, -1]]), 3).round(4).tolist()
        [[0.6667, 0.3333, 0.0], [0.0, 0.0, 1.0]]
    """
    labels = np.asarray(topk_labels, dtype=np.int64)
    units, k = labels.shape
    weight = np.broadcast_to(np.arange(k, 0, -1, dtype=np.float64), labels.shape)
    valid = labels >= 0
    rows = np.broadcast_to(np.arange(units)[:, None], labels.shape)
    flat = rows[valid] * num_classes + labels[valid]
    sums = np.bincount(flat, weights=weight[valid], minlength=units * num_classes)
    sums = sums.reshape(units, num_classes)
    total = sums.sum(axis=1, keepdims=True)
    return np.divide(sums, total, out=np.zeros_like(sums), where=total > 0)


def top_class_selectivity(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column's Morcos et al. selectivity and its top class (the first maximum) of ``means [C, U]``."""
    return selectivity(means), np.argmax(means, axis=0)


@dataclass(frozen=True, slots=True)
class Ranking:
    """Per class the best units (indices into the layer), their scores and how many scored > 0."""

    units: list[list[int]]
    values: list[list[float]]
    count: list[int]


def best_units(scores: np.ndarray, units: np.ndarray, n: int) -> Ranking:
    """Per class (column of ``scores [U, C]``) the ``n`` units of highest score > 0, best first.

    Args:
        scores: one row per unit in ``units``.
        units: the units' indices in the layer; ties go to the lower index.
        n: kept per class.

    Example:
        >>> r = best_units(np.array([[0.5, 0.0], [0.5, 0.2], [0.9, 0.0]]), np.array([4, 2, 7]), 2)
        >>> r.units, r.count
        ([[7, 2], [2]], [3, 1])
    """
    scores = np.asarray(scores, dtype=np.float64)
    units = np.asarray(units, dtype=np.int64)
    keys = np.broadcast_to(units[:, None], scores.shape)
    order = np.lexsort((keys, -scores), axis=0)[:n]  # [n, C]: by score desc, then unit asc
    top = np.take_along_axis(scores, order, axis=0)
    count = (scores > 0).sum(axis=0)
    picked_units, picked_values = [], []
    for c in range(scores.shape[1]):
        m = int(min(n, count[c]))
        picked_units.append(units[order[:m, c]].tolist())
        picked_values.append(top[:m, c].tolist())
    return Ranking(picked_units, picked_values, count.tolist())


@dataclass(frozen=True, slots=True)
class LayerRankings:
    shown: int
    share: Ranking
    selectivity: Ranking | None


@dataclass(frozen=True, slots=True)
class Result:
    units: int
    top_k: int
    activations: bool
    layers: dict[str, LayerRankings]


def flat_topk(topk_values: np.ndarray, topk_images: np.ndarray) -> np.ndarray:
    """``bool[U]``: units whose filled top-k values are all equal (at least two filled slots).

    Such a unit (dead, or constant on the probe set) ties on more images than it keeps: its top-k
    are the tie-break's (the lowest image indices, mining's order), so their classes say nothing.

    Example:
        >>> flat_topk(np.array([[2.0, 2.0, 2.0], [3.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
        ...           np.array([[0, 1, 2], [4, 5, 6], [7, -1, -1]])).tolist()
        [True, False, False]
    """
    values = np.asarray(topk_values)
    filled = (np.asarray(topk_images) >= 0).sum(axis=1)
    last = values[np.arange(len(values)), np.maximum(filled - 1, 0)]
    return (filled > 1) & (values[:, 0] == last) if values.size else np.zeros(len(values), dtype=bool)


def layer_rankings(
    topk_images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    shown: list[int],
    n: int,
    x_all: np.ndarray | LayerColumns | None = None,
    topk_values: np.ndarray | None = None,
) -> LayerRankings:
    """Both rankings of one layer's shown units.

    Args:
        topk_images: ``int[U, k]`` mined top-k probe images of every unit (-1: empty).
        labels: ``int64[N]`` probe labels.
        num_classes: C.
        shown: the units with pages (ranked; the others are not).
        n: kept per class.
        x_all: the layer's ``[N, U]`` columns of ``activations.npy``: an array or a
            :class:`~sitegen.mine.LayerColumns`; None: no selectivity.
        topk_values: ``float[U, k]`` their values: units with a flat top-k (:func:`flat_topk`)
            get no share; None: every unit is ranked.
    """
    units = np.array(sorted(shown), dtype=np.int64)
    images = np.asarray(topk_images)[units]
    tl = np.where(images >= 0, labels[np.clip(images, 0, None)], -1) if len(labels) else images
    if topk_values is not None:
        tl = np.where(flat_topk(np.asarray(topk_values)[units], images)[:, None], -1, tl)
    share = best_units(unit_shares(tl, num_classes), units, n)
    sel = None
    if x_all is not None and num_classes > 1 and len(labels) and len(units):
        sel = _selectivity(x_all, labels, num_classes, units, n)
    return LayerRankings(shown=len(units), share=share, selectivity=sel)


def _selectivity(
    x_all: np.ndarray | LayerColumns, labels: np.ndarray, num_classes: int, units: np.ndarray, n: int
) -> Ranking | None:
    """The selectivity ranking of ``units`` (sorted), or None when the layer has a negative value.

    One pass over the layer in blocks of columns (``x_all[:, a:b]`` only, what
    :class:`~sitegen.mine.LayerColumns` reads): each block's minimum, and the class means of the
    shown units in it.
    """
    total = x_all.shape[1]
    step = max(1, _BLOCK // len(labels))
    scores = np.zeros((len(units), num_classes))
    for a in range(0, total, step):
        block = np.asarray(x_all[:, a : a + step], dtype=np.float32)
        if block.size and float(block.min()) < 0:  # not rectified: undefined, as in distribution
            return None
        lo, hi = np.searchsorted(units, [a, a + block.shape[1]])
        if hi > lo:
            si, top = top_class_selectivity(class_means(block[:, units[lo:hi] - a], labels, num_classes))
            scores[np.arange(lo, hi), top] = np.where(si > 0, si, 0.0)
    return best_units(scores, units, n)


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    labels = np.asarray(mined.labels, dtype=np.int64)
    acts = mined.activations
    out = {}
    top_k = 0
    for name, topk in mined.layers.items():
        shown = ctx.shown.get(name, [])
        if not shown:
            continue
        top_k = topk.images.shape[1]
        # read with pread in blocks of columns (mine.LayerColumns), never a memory map (RSS)
        x = acts.layer(name) if acts is not None and name in acts.offsets else None
        out[name] = layer_rankings(
            topk.images, labels, len(ctx.class_names), shown, params.units, x, topk.values
        )
        ctx.progress("classes", len(out), len(mined.layers))
    if not out:
        return None
    return Result(units=params.units, top_k=top_k, activations=acts is not None, layers=out)


def _ranking(r: Ranking) -> ClassRanking:
    values = [[float(f"{v:.6g}") for v in vs] for vs in r.values]
    return ClassRanking(units=r.units, values=values, count=r.count)


def save(ctx: Context, result: Result, out: Path) -> ClassesDoc:
    """The document (no files of its own: the class pages reuse the units' sprites)."""
    return document(result)


def document(result: Result) -> ClassesDoc:
    """:func:`save` without a context."""
    layers = {
        name: ClassesLayer(
            shown=lay.shown,
            share=_ranking(lay.share),
            selectivity=_ranking(lay.selectivity) if lay.selectivity is not None else None,
        )
        for name, lay in result.layers.items()
    }
    return ClassesDoc(units=result.units, top_k=result.top_k, activations=result.activations, layers=layers)
