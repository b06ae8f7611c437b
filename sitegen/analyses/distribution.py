"""Activation distributions and unit scores (issue 15, items 2 and 3), numpy over ``activations.npy``.

Mining keeps every unit's maximum on every probe image (float16 ``[N, total units]``,
:class:`sitegen.mine.Activations`). From that one array, per unit:

- **histogram** of its per-image maxima: ``bins`` equal-width bins from ``min(0, lowest)`` to its
  highest value (all images in the first bin when the two coincide);
- **density**: the share of images where it fires, ``max > threshold`` (0 for post-ReLU layers;
  sae_vis / Neuronpedia "feature density"); defined only for *rectified* layers (every value ≥ 0)
  other than ``prob`` (a softmax is always > 0). A unit with density 0 is **dead**, one below
  ``rare`` (1 %) **rarely firing**;
- **mean** and **max** of its per-image maxima;
- **class selectivity** (Morcos et al. 2018, eq. 1): with ``μ_c`` the unit's mean over the images of
  class ``c``, ``(μ_max − μ_−max) / (μ_max + μ_−max)``, ``μ_max`` the largest class mean and
  ``μ_−max`` the mean of the other classes' means: 0 = the same for every class, 1 = fires for one
  class only. Defined for rectified layers (prob included); 0 when all means are 0;
- **entropy** (bits) of the classes of its top-k images (empty slots ignored): 0 = one class,
  ``log2(k)`` = all different;
- **interval samples** (shown units): the images it fires on (all images for a non-rectified
  layer), less its top-k images, ordered by (value, image index), cut into ``intervals`` equal-count
  (quantile) intervals (``numpy.array_split``: the first ones take the remainder); from each,
  ``per_interval`` images at evenly spaced ranks ``floor((j + 0.5) · len / per_interval)``. Exact and
  deterministic: no random draw.

The layer is read in blocks of columns (``_BLOCK`` values at a time), so memory stays bounded
whatever the probe set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from sitegen.analyses.registry import Context
from sitegen.spec import DistributionSpec
from sitegen.store import codecs
from sitegen.store.formats import DistributionDoc, DistributionLayer, DistributionUnit

if TYPE_CHECKING:  # torch-free at run time: the test fixture writes its document with these functions
    from sitegen.mine import LayerColumns, Mined

__all__ = [
    "KIND",
    "Params",
    "Result",
    "class_means",
    "document",
    "entropy",
    "layer_scores",
    "histograms",
    "interval_samples",
    "run",
    "save",
    "selectivity",
]

KIND = "distribution"
Params = DistributionSpec
THUMB = 64  # px of the stored thumbnails of the interval samples
_BLOCK = 1 << 22  # float32 values per block of columns (16 MB)


def class_means(x: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, U]``: the mean of each column of ``x`` ``[N, U]`` over the images of each class (0: none).

    Up to 64 classes a one-hot matrix product (BLAS, float32 sums: 0.05 s for 10k images x 4096
    units); beyond, one sort of the rows by class and one ``add.reduceat`` (``np.add.at`` was 10x
    slower than either).
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)[:, None]
    if len(labels) == 0:
        return np.zeros((num_classes, x.shape[1]), dtype=np.float64)
    if num_classes <= 64:
        onehot = np.zeros((num_classes, len(labels)), dtype=np.float32)
        onehot[labels, np.arange(len(labels))] = 1.0
        sums = (onehot @ np.asarray(x, dtype=np.float32)).astype(np.float64)
    else:
        order = np.argsort(labels, kind="stable")
        present, starts = np.unique(labels[order], return_index=True)
        sums = np.zeros((num_classes, x.shape[1]), dtype=np.float64)
        sums[present] = np.add.reduceat(x[order], starts, axis=0, dtype=np.float64)
    return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)


def selectivity(means: np.ndarray) -> np.ndarray:
    """Morcos et al. 2018 class selectivity of each column of ``means`` ``[C, U]`` (C ≥ 2), in [0, 1]
    for non-negative means; 0 where every mean is 0."""
    top = means.max(axis=0)
    rest = (means.sum(axis=0) - top) / max(means.shape[0] - 1, 1)
    den = top + rest
    return np.divide(top - rest, den, out=np.zeros_like(top, dtype=np.float64), where=den > 0)


def entropy(topk_labels: np.ndarray) -> np.ndarray:
    """Shannon entropy in bits of the classes in each row of ``topk_labels`` ``[U, k]`` (-1 ignored)."""
    out = np.zeros(len(topk_labels))
    for u, row in enumerate(topk_labels):
        row = row[row >= 0]
        if len(row):
            p = np.unique(row, return_counts=True)[1] / len(row)
            out[u] = float(-(p * np.log2(p)).sum()) + 0.0
    return out


def histograms(x: np.ndarray, bins: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``[U, bins]`` counts of each column of ``x`` ``[N, U]`` in ``bins`` equal bins over [lo, hi]
    (the last bin closed; a column with ``hi == lo`` puts every image in the first bin)."""
    n, u = x.shape
    span = np.where(hi > lo, hi - lo, 1.0)
    idx = np.floor((x - lo) / span * bins).astype(np.int64)
    np.clip(idx, 0, bins - 1, out=idx)
    idx += np.arange(u, dtype=np.int64) * bins
    return np.bincount(idx.ravel(), minlength=u * bins).reshape(u, bins)


def interval_samples(
    values: np.ndarray, candidates: np.ndarray, intervals: int, per_interval: int
) -> list[np.ndarray]:
    """Images sampled from equal-count intervals of one unit's activations (module docstring).

    Args:
        values: ``[N]``, the unit's maximum on every image.
        candidates: bool ``[N]``: the images to sample from.
        intervals: how many equal-count intervals.
        per_interval: images per interval (fewer when an interval is smaller).

    Returns:
        Per interval, lowest first, the sampled image indices in ascending value (empty intervals
        are dropped).
    """
    idx = np.flatnonzero(candidates)
    order = idx[np.argsort(values[idx], kind="stable")]  # ties: image index ascending
    out = []
    for part in np.array_split(order, intervals):
        if len(part) == 0:
            continue
        m = min(per_interval, len(part))
        ranks = np.floor((np.arange(m) + 0.5) * len(part) / m).astype(np.int64)
        out.append(part[ranks])
    return out


@dataclass(frozen=True, slots=True)
class LayerScores:
    rectified: bool
    density: np.ndarray | None  # [U]
    mean: np.ndarray
    max: np.ndarray
    selectivity: np.ndarray | None
    entropy: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    counts: dict[int, np.ndarray]  # shown unit -> [bins]
    samples: dict[int, list[np.ndarray]]  # shown unit -> per interval image indices
    values: dict[int, list[np.ndarray]]


@dataclass(frozen=True, slots=True)
class Result:
    images: int
    params: DistributionSpec
    layers: dict[str, LayerScores]


def layer_scores(
    x_all: np.ndarray | LayerColumns,
    kind: str,
    labels: np.ndarray,
    num_classes: int,
    topk_images: np.ndarray,
    topk_labels: np.ndarray,
    shown: list[int],
    p: DistributionSpec,
) -> LayerScores:
    """Every score of one layer from its ``[N, U]`` activations (read in blocks of columns).

    Args:
        x_all: the layer's columns of ``activations.npy``: an array, or a
            :class:`~sitegen.mine.LayerColumns` (indexed ``[:, a:b]`` only).
        kind: ``LayerInfo.kind`` (``prob`` gets no density).
        labels: int64 ``[N]`` probe labels.
        num_classes: classes of the dataset.
        topk_images: ``[U, k]`` mined top-k images (-1: empty), left out of the interval samples.
        topk_labels: ``[U, k]`` their classes (-1: empty), for the entropy.
        shown: the units whose histogram and samples are kept.
        p: the spec section.
    """
    n, units = x_all.shape
    step = max(1, _BLOCK // max(n, 1))
    # one pass for the layer's minimum first: whether it is rectified decides which images are sampled
    rectified = all(
        float(np.min(x_all[:, a : a + step], initial=0.0)) >= 0 for a in range(0, units if n else 0, step)
    )
    mean, mx, mn, dens, sel = (np.zeros(units) for _ in range(5))
    lo, hi = np.zeros(units), np.zeros(units)
    counts: dict[int, np.ndarray] = {}
    samples: dict[int, list[np.ndarray]] = {}
    values: dict[int, list[np.ndarray]] = {}
    shown_set = set(shown)
    for start in range(0, units, step):
        x = np.asarray(x_all[:, start : start + step], dtype=np.float32)
        cols = range(start, start + x.shape[1])
        if n:
            mean[cols.start : cols.stop] = x.mean(axis=0, dtype=np.float64)
            mx[cols.start : cols.stop] = x.max(axis=0)
            mn[cols.start : cols.stop] = x.min(axis=0)
            dens[cols.start : cols.stop] = (x > p.threshold).mean(axis=0)
            sel[cols.start : cols.stop] = selectivity(class_means(x, labels, num_classes))
        b_lo = np.minimum(mn[cols.start : cols.stop], 0.0)
        b_hi = np.maximum(mx[cols.start : cols.stop], b_lo)
        lo[cols.start : cols.stop], hi[cols.start : cols.stop] = b_lo, b_hi
        picked = [u for u in cols if u in shown_set]
        if not picked:
            continue
        j = np.array(picked) - start
        hist = histograms(x[:, j], p.bins, b_lo[j], b_hi[j])
        for u, h in zip(picked, hist, strict=True):
            counts[u] = h
            col = x[:, u - start]
            cand = np.ones(n, dtype=bool)
            cand[topk_images[u][topk_images[u] >= 0]] = False
            if rectified and kind != "prob":  # sample the images it fires on
                cand &= col > p.threshold
            parts = interval_samples(col, cand, p.intervals, p.per_interval)
            samples[u] = parts
            values[u] = [col[part] for part in parts]
    return LayerScores(
        rectified=rectified,
        density=dens if rectified and kind != "prob" else None,
        mean=mean,
        max=mx,
        selectivity=sel if rectified and num_classes > 1 else None,
        entropy=entropy(topk_labels),
        lo=lo,
        hi=hi,
        counts=counts,
        samples=samples,
        values=values,
    )


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    acts = mined.activations
    if acts is None:  # analyses.activations.enabled: false
        return None
    labels = np.asarray(mined.labels, dtype=np.int64)
    num_classes = len(ctx.class_names)
    out = {}
    infos = {info.name: info for info in ctx.loaded.layers}
    for name, topk in mined.layers.items():
        if name not in acts.offsets:
            continue
        kind = infos[name].kind if name in infos else "conv"
        tl = topk.images
        if len(labels):  # the classes of its top-k images (-1: empty slot)
            tl = np.where(topk.images >= 0, labels[np.clip(topk.images, 0, None)], -1)
        # read in blocks of columns with pread (mine.LayerColumns), not through a memory map: any
        # read of a map brings the whole file into the process's RSS (10,000 alexnet images: +191 MB)
        shown = ctx.shown.get(name, [])
        out[name] = layer_scores(acts.layer(name), kind, labels, num_classes, topk.images, tl, shown, params)
        ctx.progress("distribution", len(out), len(mined.layers))
    return Result(images=len(labels), params=params, layers=out)


def _r(a: np.ndarray | None, digits: int = 4) -> list[float] | None:
    return None if a is None else [float(f"{v:.{digits}g}") for v in np.asarray(a, dtype=np.float64)]


def save(ctx: Context, result: Result, out: Path) -> DistributionDoc:
    """The document, and a ``THUMB`` px thumbnail per sampled image under ``distribution/``."""
    return document(result, ctx.picture, out)


def document(result: Result, picture: Callable[[int], np.ndarray], out: Path) -> DistributionDoc:
    """:func:`save` with the probe pictures (index -> uint8 ``[H, W, 3]``) given directly."""
    layers = {}
    used: set[int] = set()
    for name, s in result.layers.items():
        units = {}
        for u, counts in s.counts.items():
            parts = s.samples[u]
            used.update(int(i) for part in parts for i in part)
            units[str(u)] = DistributionUnit(
                lo=float(f"{s.lo[u]:.5g}"),
                hi=float(f"{s.hi[u]:.5g}"),
                counts=[int(c) for c in counts],
                samples=[[int(i) for i in part] for part in parts],
                values=[_r(v) or [] for v in s.values[u]],
                bounds=[[float(f"{v.min():.4g}"), float(f"{v.max():.4g}")] for v in s.values[u]],
            )
        layers[name] = DistributionLayer(
            rectified=s.rectified,
            density=_r(s.density),
            mean=_r(s.mean) or [],
            max=_r(s.max) or [],
            selectivity=_r(s.selectivity),
            entropy=_r(s.entropy) or [],
            units=units,
        )
    thumbs = {}
    for i in sorted(used):
        rel = f"distribution/{i}.png"
        pic = Image.fromarray(picture(i))
        if max(pic.size) > THUMB:
            size = (THUMB, max(1, math.ceil(THUMB * pic.height / pic.width)))
            pic = pic.resize(size, Image.Resampling.LANCZOS)
        codecs.write_png(out / rel, np.asarray(pic))
        thumbs[str(i)] = rel
    p = result.params
    return DistributionDoc(
        images=result.images,
        bins=p.bins,
        intervals=p.intervals,
        per_interval=p.per_interval,
        threshold=p.threshold,
        rare=p.rare,
        layers=layers,
        thumbs=thumbs,
    )
