"""Which classes a layer prefers: rank-weighted class histograms of the units' top-k images.

The lab study of AlexNet and VGG-19 on TU-Berlin sketches traces every filter's top-9 images to
their classes. For each rank r = 1..9 it counts, over all filters of a layer, how often each
class is the rank-r image; the sum of these histograms weighted by 10 - r (rank 1 weighs 9, rank
9 weighs 1) is the layer's class preference. Its top-5 and bottom-5 classes per layer and over
all layers form the "layer bias" table, and exemplar images of those classes the summary plots.
Here the weight is ``k + 1 - r`` for any k (``10 - r`` for k = 9).

Pure numpy over mined tables: no torch, no loops over units. Empty slots (image -1, when the
probe split has fewer than k images) are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ClassPreference", "class_histograms", "class_preference", "overall_preference", "probe_picks"]


@dataclass(frozen=True, slots=True)
class ClassPreference:
    """One layer's class preference.

    Attributes:
        per_rank: float64[k, C]; ``per_rank[r - 1, c]`` = number of units whose rank-r image has class c.
        weighted: float64[C]; ``sum_r (k + 1 - r) * per_rank[r - 1]``.
        top5: int64[min(5, C)], the most preferred classes, best first (ties: lower class index first).
        bottom5: int64[min(5, C)], the least preferred classes, least first, zero scores included
            (ties: lower class index first).
        purity: float64[U], share of a unit's (non-empty) top-k images that belong to its most
            frequent class; 0 for a unit without images.
        dominant: int64[U], that class (ties: lowest class index; -1 for a unit without images).
        exemplars: int64[C, n], per class up to n probe images of that class, by their total rank
            weight in this layer's tables (then image index), filled up with the class's first
            probe images; -1 pads.
    """

    per_rank: np.ndarray
    weighted: np.ndarray
    top5: np.ndarray
    bottom5: np.ndarray
    purity: np.ndarray
    dominant: np.ndarray
    exemplars: np.ndarray


def class_histograms(topk_labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-rank class histograms over a layer's units and their rank-weighted sum.

    Args:
        topk_labels: int[U, k], the class of each unit's rank-1..k image (column 0 = rank 1);
            -1 marks an empty slot and is ignored.
        num_classes: C, the number of classes.

    Returns:
        ``(per_rank, weighted)``: float64[k, C] counts with rank 1 first, and float64[C] with
        weight ``k + 1 - r`` for rank r (9..1 for k = 9, the study's ``10 - r``).

    Example:
        >>> per_rank, weighted = class_histograms(np.array([[0, 1], [1, -1]]), 3)
        >>> per_rank.tolist(), weighted.tolist()
        ([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]], [2.0, 3.0, 0.0])
    """
    labels = np.asarray(topk_labels)
    if labels.ndim != 2:
        raise ValueError(f"topk_labels must be [units, k], got shape {labels.shape}")
    k = labels.shape[1]
    _check_labels(labels, num_classes, empty_ok=True)
    rank = np.broadcast_to(np.arange(k), labels.shape)
    valid = labels >= 0
    flat = rank[valid] * num_classes + labels[valid]
    per_rank = np.bincount(flat, minlength=k * num_classes).reshape(k, num_classes).astype(np.float64)
    weighted = np.arange(k, 0, -1, dtype=np.float64) @ per_rank
    return per_rank, weighted


def class_preference(
    topk_images: np.ndarray, labels: np.ndarray, num_classes: int, n_exemplars: int = 3
) -> ClassPreference:
    """A layer's class preference from its top-k image table and the probe labels.

    Args:
        topk_images: int[U, k], probe image indices per unit, rank 1 first (``LayerTopK.images``);
            -1 marks an empty slot.
        labels: int[N], the class of every probe image (``Mined.labels``).
        num_classes: C.
        n_exemplars: exemplar images kept per class.

    Returns:
        The layer's :class:`ClassPreference`.

    Example:
        >>> pref = class_preference(np.array([[0, 2], [1, -1]]), np.array([1, 0, 1]), 2)
        >>> pref.weighted.tolist(), pref.top5.tolist(), pref.purity.tolist(), pref.dominant.tolist()
        ([2.0, 3.0], [1, 0], [1.0, 1.0], [1, 0])
    """
    images = np.asarray(topk_images)
    labels = np.asarray(labels)
    _check_labels(labels, num_classes, empty_ok=False)
    if images.ndim != 2:
        raise ValueError(f"topk_images must be [units, k], got shape {images.shape}")
    if images.size and images.max() >= len(labels):
        raise ValueError(f"image index {images.max()} out of range for {len(labels)} probe labels")
    valid = images >= 0
    topk_labels = np.full(images.shape, -1, dtype=np.int64)
    topk_labels[valid] = labels[images[valid]]
    per_rank, weighted = class_histograms(topk_labels, num_classes)
    classes = np.arange(num_classes)
    top5 = np.lexsort((classes, -weighted))[:5]
    bottom5 = np.lexsort((classes, weighted))[:5]
    purity, dominant = _purity(topk_labels)
    k = images.shape[1]
    rank_weight = np.broadcast_to(np.arange(k, 0, -1, dtype=np.float64), images.shape)
    image_weight = np.bincount(images[valid], weights=rank_weight[valid], minlength=len(labels))
    return ClassPreference(
        per_rank=per_rank,
        weighted=weighted,
        top5=top5.astype(np.int64),
        bottom5=bottom5.astype(np.int64),
        purity=purity,
        dominant=dominant,
        exemplars=_exemplars(image_weight, labels, num_classes, n_exemplars),
    )


def overall_preference(weighted_per_layer: Sequence[np.ndarray]) -> np.ndarray:
    """The network's class preference: each layer's ``weighted`` scaled to sum 1, then summed.

    Scaling lets a layer with 64 units count as much as one with 4096. A layer whose preference
    sums to 0 (no images) adds nothing.

    Example:
        >>> overall_preference([np.array([1.0, 1.0, 2.0]), np.array([0.0, 3.0, 1.0])]).tolist()
        [0.25, 1.0, 0.75]
    """
    if not weighted_per_layer:
        raise ValueError("overall_preference needs at least one layer")
    stacked = np.stack([np.asarray(w, dtype=np.float64) for w in weighted_per_layer])
    totals = stacked.sum(axis=1, keepdims=True)
    return np.divide(stacked, totals, out=np.zeros_like(stacked), where=totals > 0).sum(axis=0)


def _check_labels(labels: np.ndarray, num_classes: int, *, empty_ok: bool) -> None:
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"class labels must be integers, got {labels.dtype}")
    low = -1 if empty_ok else 0
    if labels.size and (labels.min() < low or labels.max() >= num_classes):
        allowed = f"[0, {num_classes})" + (" or -1 (empty)" if empty_ok else "")
        raise ValueError(f"class labels must lie in {allowed}, got {labels.min()}..{labels.max()}")


def _purity(topk_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of each row's most frequent label, and that label (ties: lowest), ignoring -1."""
    units = topk_labels.shape[0]
    # Sorted rows put equal labels side by side and empty slots (-1) first; counting equal pairs
    # over [U, k, k] stays small (k ~ 9) where a [U, C] table would not (4096 units x 1000 classes).
    rows = np.sort(topk_labels, axis=1)
    valid = rows >= 0
    counts = ((rows[:, :, None] == rows[:, None, :]) & valid[:, None, :]).sum(axis=2)
    counts = np.where(valid, counts, 0)
    best = counts.argmax(axis=1)  # first maximum = lowest label among the most frequent
    n_valid = valid.sum(axis=1)
    unit = np.arange(units)
    purity = np.divide(counts[unit, best], n_valid, out=np.zeros(units), where=n_valid > 0)
    dominant = np.where(n_valid > 0, rows[unit, best], -1).astype(np.int64)
    return purity, dominant


def _exemplars(image_weight: np.ndarray, labels: np.ndarray, num_classes: int, n: int) -> np.ndarray:
    """Per class the first ``n`` of its images ordered by (weight desc, index asc); -1 pads.

    Images that never appear in a table weigh 0 and so follow in index order: the fill-up with
    the class's first probe images falls out of the same sort.
    """
    out = np.full((num_classes, n), -1, dtype=np.int64)
    index = np.arange(len(labels))
    order = np.lexsort((index, -image_weight, labels))  # grouped by class
    cls = labels[order]
    first = np.searchsorted(cls, cls, side="left")  # start of each image's class group
    slot = np.arange(len(order)) - first
    keep = slot < n
    out[cls[keep], slot[keep]] = order[keep]
    return out


def probe_picks(labels: np.ndarray, n: int) -> list[int]:
    """One probe image per class, in class order, until ``n`` (then the next image of each class...)."""
    per_class = [np.flatnonzero(labels == c).tolist() for c in np.unique(labels)]
    picks: list[int] = []
    depth = 0
    while len(picks) < n and any(depth < len(p) for p in per_class):
        for p in per_class:
            if depth < len(p) and len(picks) < n:
                picks.append(int(p[depth]))
        depth += 1
    return picks
