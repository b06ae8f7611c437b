"""Per-unit and per-layer measures of a diff: pure numpy functions of two sides' arrays.

Top-k overlap, rank-biased overlap (RBO), class-preference distances (L1, Jensen–Shannon), top/bottom
classes and filter cosine, as defined in :mod:`sitegen.diff`. Render reuses :func:`topk_overlap` for
the feature-evolution pages and :func:`top_bottom` for the layer pages.
"""

from __future__ import annotations

import math

import numpy as np

_CHUNK = 2048  # units per vectorized block: [chunk, k, k] booleans stay small for any k
RBO_P = 0.9  # RBO persistence: the expected depth a reader looks at is 1 / (1 - p) = 10 ranks


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two [units, k] arrays of one shape, got {a.shape} and {b.shape}")
    return a, b


def topk_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per unit, how many of ``a``'s top-k images are also in ``b``'s top-k.

    Args:
        a: int ``[U, k]`` probe image indices (``-1`` = empty slot), e.g. ``mined.npz`` ``<layer>/images``.
        b: the same for the other checkpoint.

    Returns:
        int64 ``[U]`` in ``0..k``.

    Example:
        >>> topk_overlap(np.array([[3, 1, 2]]), np.array([[2, 5, 3]]))
        array([2])
    """
    a, b = _pair(a, b)
    out = np.zeros(len(a), np.int64)
    for s in range(0, len(a), _CHUNK):
        ca, cb = a[s : s + _CHUNK], b[s : s + _CHUNK]
        hit = (ca[:, :, None] == cb[:, None, :]).any(2) & (ca >= 0)
        out[s : s + _CHUNK] = hit.sum(1)
    return out


def rank_biased_overlap(a: np.ndarray, b: np.ndarray, p: float = RBO_P) -> np.ndarray:
    """Per unit, the rank-biased overlap of two top-k lists (:mod:`sitegen.diff`; Webber et al. 2010).

    Args:
        a: int ``[U, k]`` top-k image indices in rank order (``-1`` = empty slot, never shared).
        b: the same for the other checkpoint.
        p: persistence in (0, 1): how steeply agreement further down counts less.

    Returns:
        float64 ``[U]`` in [0, 1]: 1 for identical lists, 0 for disjoint ones.

    Example:
        >>> rank_biased_overlap(np.array([[1, 2, 3]]), np.array([[2, 1, 3]]))  # X = (0, 2, 3)
        array([0.9])
    """
    if not 0 < p < 1:
        raise ValueError(f"RBO persistence p must lie in (0, 1), got {p}")
    a, b = _pair(a, b)
    k = a.shape[1]
    depth = np.arange(1, k + 1, dtype=np.float64)
    w = (1 - p) / p * p**depth / depth  # weight of X_d
    w[-1] += p**k / k  # the extrapolation term (X_k / k) p^k
    # a shared image at rank i of a and j of b is in both prefixes from depth max(i, j) + 1 on
    first = np.maximum(np.arange(k)[:, None], np.arange(k)[None, :])
    out = np.zeros(len(a), np.float64)
    for s in range(0, len(a), _CHUNK):
        ca, cb = a[s : s + _CHUNK], b[s : s + _CHUNK]
        eq = (ca[:, :, None] == cb[:, None, :]) & (ca >= 0)[:, :, None]
        new = np.stack([(eq & (first == d)).sum((1, 2)) for d in range(k)], 1)  # [U, k]
        out[s : s + _CHUNK] = np.cumsum(new, 1) @ w
    return np.clip(out, 0.0, 1.0)


def _normalize(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, np.float64)
    total = float(w.sum())
    return w / total if total > 0 else np.full(len(w), 1.0 / max(len(w), 1))


def preference_distances(weighted_a: np.ndarray, weighted_b: np.ndarray) -> tuple[float, float]:
    """L1 and Jensen–Shannon distance (base 2, square root of the divergence) of two class preferences.

    Args:
        weighted_a: ``[C]`` rank-weighted class histogram; normalized to sum 1 here.
        weighted_b: the same for the other checkpoint.

    Returns:
        ``(l1, js)``: l1 in [0, 2], js in [0, 1]; both 0 for equal preferences.

    Example:
        >>> preference_distances(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
        (2.0, 1.0)
    """
    p, q = _normalize(weighted_a), _normalize(weighted_b)
    if p.shape != q.shape:
        raise ValueError(f"class histograms of different length: {p.shape} vs {q.shape}")
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

    return float(np.abs(p - q).sum()), math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


def top_bottom(weighted: np.ndarray, n: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ``n`` most and least preferred classes of a weighted histogram (ties: lower index first
    among the most preferred; the bottom list starts with the least preferred).

    Args:
        weighted: ``[C]`` rank-weighted class histogram.
        n: how many; default ``min(5, C // 2)``, at least 1 (the layer pages' top/bottom-5).
    """
    w = np.asarray(weighted)
    if n is None:
        n = max(1, min(5, len(w) // 2))
    order = np.argsort(-w, kind="stable").tolist()
    return tuple(order[:n]), tuple(reversed(order[-n:]))


def filter_cosine(weights_a: np.ndarray, weights_b: np.ndarray) -> np.ndarray:
    """Per unit, the cosine similarity of its filter in A and in B.

    Args:
        weights_a: ``[U, fan_in]`` (any float dtype), a unit's weights flattened per row.
        weights_b: the same for the other checkpoint.

    Returns:
        float64 ``[U]`` in [-1, 1]; NaN where either filter is all zeros.
    """
    wa = np.asarray(weights_a, np.float64).reshape(len(weights_a), -1)
    wb = np.asarray(weights_b, np.float64).reshape(len(weights_b), -1)
    if wa.shape != wb.shape:
        raise ValueError(f"filter weights of different shape: {wa.shape} vs {wb.shape}")
    norm = np.linalg.norm(wa, axis=1) * np.linalg.norm(wb, axis=1)
    dot = (wa * wb).sum(1)
    out = np.full(len(wa), np.nan)
    ok = norm > 0
    out[ok] = np.clip(dot[ok] / norm[ok], -1.0, 1.0)
    return out
