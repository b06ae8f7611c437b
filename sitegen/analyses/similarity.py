"""Unit and network similarity from the per-image activations (issue 15, item 6): numpy and scipy only.

Every measure here reads ``[N, U]`` blocks of per-image maxima (``activations.npy``, float16: each
unit's spatial maximum on each probe image, :class:`sitegen.mine.Activations`): an array, a memory
map or a :class:`sitegen.mine.LayerColumns`, indexed only as ``x[:, a:b]``, in blocks of at most
``_BLOCK`` values, so memory stays bounded in N and U.

- **Pearson correlation** of two units over the probe images. Columns are standardized in float64
  (``z = (x − mean) / (std · √N)``, population std) and multiplied in float32 blocks,
  ``r = z_aᵀ z_b``. A *constant* unit (the same value on every image, e.g. a dead one) has no
  correlation: it is never listed and gets no list of its own.
- **Linear CKA** (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited",
  eq. 5 with the linear kernel): for column-centred features ``X`` ``[N, p]`` and ``Y`` ``[N, q]``,
  ``CKA = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)``, in [0, 1]; invariant to orthogonal transforms and
  isotropic scaling of either side. The features of a layer are its units' per-image maxima (the
  spatially max-pooled map), not the full maps. In float64; a layer is held either as its centred
  features (``p ≤ N``: the *feature route*) or as its centred Gram matrix ``X Xᵀ`` (``p > N``: the
  *Gram route*, N x N), whichever is smaller, using ``‖Yᵀ X‖²_F = ⟨X Xᵀ, Y Yᵀ⟩_F`` and
  ``‖Xᵀ X‖_F = ‖X Xᵀ‖_F``. CKA involving a layer whose every unit is constant is undefined (NaN).
- **Hungarian matching** (Kuhn 1955; ``scipy.optimize.linear_sum_assignment``) of two layers' units by
  correlation: the one-to-one assignment maximizing the summed r (pairs with a constant unit count
  r = 0), as Li et al. 2016 ("Convergent learning") match units of two networks trained apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Columns(Protocol):
    """What the measures read: ``shape`` and ``x[:, a:b]`` (an array, memory map or LayerColumns)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, key: Any) -> Any: ...

__all__ = [
    "ColumnStats",
    "Columns",
    "assignment",
    "cka_matrix",
    "column_stats",
    "correlation_matrix",
    "linear_cka",
    "match_units",
    "top_correlated",
]

_BLOCK = 1 << 22  # values per block of columns (16 MB as float32, 32 MB as float64)


def _step(n: int) -> int:
    return max(1, _BLOCK // max(n, 1))


@dataclass(frozen=True, slots=True)
class ColumnStats:
    """Per column of an ``[N, U]`` array: mean, ``std · √N`` (the standardizing divisor) and whether
    it is constant (max == min, exactly: its correlation is undefined)."""

    mean: np.ndarray  # float64 [U]
    scale: np.ndarray  # float64 [U]; 1 where constant
    constant: np.ndarray  # bool [U]


def column_stats(x: Columns) -> ColumnStats:
    """:class:`ColumnStats` of ``x`` ``[N, U]``, read in blocks of columns."""
    n, u = x.shape
    mean, scale = np.zeros(u), np.ones(u)
    constant = np.ones(u, dtype=bool)
    for s in range(0, u, _step(n)):
        b = np.asarray(x[:, s : s + _step(n)], dtype=np.float64)
        if n == 0:
            continue
        m = b.mean(0)
        sd = np.sqrt(((b - m) ** 2).mean(0)) * np.sqrt(n)
        const = b.max(0) == b.min(0)
        mean[s : s + b.shape[1]] = m
        scale[s : s + b.shape[1]] = np.where(const | (sd == 0), 1.0, sd)
        constant[s : s + b.shape[1]] = const | (sd == 0)
    return ColumnStats(mean, scale, constant)


def _z(x: Columns, cols: slice | np.ndarray, st: ColumnStats) -> np.ndarray:
    """Standardized float32 columns (constant ones all 0): ``z_aᵀ z_b`` is Pearson's r.

    Many picked columns are standardized a block at a time into the float32 result: all 4,096 of
    fc6 over 3,040 images at once held 250 MB of float64 copies (issue 13: the build's peak RSS).
    """
    if not isinstance(cols, slice) and len(cols) > _step(x.shape[0]):
        picks = np.asarray(cols, dtype=np.int64)
        out = np.empty((x.shape[0], len(picks)), np.float32)
        step = _step(x.shape[0])
        for s in range(0, len(picks), step):
            out[:, s : s + step] = _z(x, picks[s : s + step], st)
        return out
    b = _read(x, cols)
    z = (b - st.mean[cols]) / st.scale[cols]
    z[:, st.constant[cols]] = 0.0
    return z.astype(np.float32)


def _read(x: Columns, cols: slice | np.ndarray) -> np.ndarray:
    """float64 columns ``cols`` (a slice, or indices read through the blocks that hold them)."""
    if isinstance(cols, slice):
        return np.asarray(x[:, cols], dtype=np.float64)
    cols = np.asarray(cols, dtype=np.int64)
    n = x.shape[0]
    out = np.empty((n, len(cols)))
    step = _step(n)
    for s in range(0, int(cols.max()) + 1 if len(cols) else 0, step):
        hit = np.flatnonzero((cols >= s) & (cols < s + step))
        if len(hit):
            block = np.asarray(x[:, s : s + step], dtype=np.float64)
            out[:, hit] = block[:, cols[hit] - s]
    return out


def top_correlated(
    xa: Columns,
    rows: Sequence[int] | np.ndarray,
    xb: Columns,
    k: int,
    *,
    same: bool,
    stats_a: ColumnStats | None = None,
    stats_b: ColumnStats | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` units of ``xb`` most correlated with each of the units ``rows`` of ``xa``.

    Args:
        xa: ``[N, Ua]`` per-image activations (a memory map is fine).
        rows: the units of ``xa`` to list for (e.g. the shown units).
        xb: ``[N, Ub]``, the same images (``xa`` itself for the same layer).
        k: how many per row (fewer when ``xb`` has fewer non-constant units).
        same: ``xb`` is ``xa``: a unit is not listed as similar to itself.
        stats_a: :func:`column_stats` of ``xa`` when already computed.
        stats_b: the same for ``xb``.

    Returns:
        ``(units, r)``: int64 and float32 ``[len(rows), k]``, highest r first (ties: lower unit
        first), padded with ``-1`` / NaN; a constant row (undefined r) is all padding. Constant
        columns of ``xb`` are never listed.
    """
    picks = np.asarray(rows, dtype=np.int64)
    sa = stats_a or column_stats(xa)
    sb = stats_b or (sa if same else column_stats(xb))
    n, ub = xb.shape
    za = _z(xa, picks, sa) if len(picks) else np.zeros((n, 0), np.float32)
    best_r = np.full((len(picks), 0), -np.inf, np.float32)
    best_u = np.zeros((len(picks), 0), np.int64)
    step = _step(n)
    for s in range(0, ub, step):
        cols = slice(s, min(ub, s + step))
        r = np.clip(za.T @ _z(xb, cols, sb), -1.0, 1.0)  # [R, B]
        r[:, sb.constant[cols]] = -np.inf
        idx = np.broadcast_to(np.arange(cols.start, cols.stop), r.shape)
        if same:
            r[idx == picks[:, None]] = -np.inf
        cand_r = np.concatenate([best_r, r], 1)
        cand_u = np.concatenate([best_u, idx], 1)
        if cand_r.shape[1] > k:
            keep = np.argpartition(-cand_r, k - 1, axis=1)[:, :k]
            cand_r = np.take_along_axis(cand_r, keep, 1)
            cand_u = np.take_along_axis(cand_u, keep, 1)
        best_r, best_u = cand_r, cand_u
    order = np.lexsort((best_u, -best_r), axis=1) if best_r.size else np.zeros(best_r.shape, np.int64)
    best_r = np.take_along_axis(best_r, order, 1)
    best_u = np.take_along_axis(best_u, order, 1)
    pad = ~np.isfinite(best_r) | sa.constant[picks][:, None]
    units = np.where(pad, -1, best_u)
    values = np.where(pad, np.nan, best_r).astype(np.float32)
    if units.shape[1] < k:  # fewer candidates than k
        extra = k - units.shape[1]
        units = np.pad(units, ((0, 0), (0, extra)), constant_values=-1)
        values = np.pad(values, ((0, 0), (0, extra)), constant_values=np.nan)
    return units, values


def correlation_matrix(xa: Columns, xb: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pearson r of every unit of ``xa`` ``[N, Ua]`` with every unit of ``xb`` ``[N, Ub]``.

    Returns:
        ``(r, constant_a, constant_b)``: float32 ``[Ua, Ub]`` (0 where either unit is constant) and
        the two bool masks of constant units.
    """
    sa, sb = column_stats(xa), column_stats(xb)
    n, ua = xa.shape
    out = np.zeros((ua, xb.shape[1]), np.float32)
    step = _step(n)
    zb = [(s, _z(xb, slice(s, s + step), sb)) for s in range(0, xb.shape[1], step)]
    for s in range(0, ua, step):
        za = _z(xa, slice(s, s + step), sa)
        for t, z in zb:
            out[s : s + za.shape[1], t : t + z.shape[1]] = za.T @ z
    np.clip(out, -1.0, 1.0, out=out)
    return out, sa.constant, sb.constant


def match_units(xa: Columns, xb: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match each unit of ``xa`` to one unit of ``xb`` (same width) maximizing the summed correlation.

    Returns:
        ``(match, r, defined)``: ``match[u]`` is B's unit for A's unit ``u`` (a permutation of
        ``0..U-1``), ``r[u]`` its correlation (float64), ``defined[u]`` False where either unit is
        constant (r undefined: such pairs count as 0 in the assignment and are left out of means).
    """
    if xa.shape != xb.shape:
        raise ValueError(f"matching needs two layers of one shape, got {xa.shape} and {xb.shape}")
    return assignment(*correlation_matrix(xa, xb))


def assignment(
    r: np.ndarray, ca: np.ndarray, cb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`match_units` from a square correlation matrix and the constant masks of its rows/columns."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(r.astype(np.float64), maximize=True)
    match = np.empty(len(rows), np.int64)
    match[rows] = cols
    got = r[np.arange(len(match)), match].astype(np.float64)
    defined = ~ca & ~cb[match]
    return match, np.where(defined, got, np.nan), defined


# --- linear CKA ---------------------------------------------------------------------------------------


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two feature matrices of the same images (rows), by the direct formula in float64.

    Example:
        >>> x = np.random.default_rng(0).normal(size=(50, 4))
        >>> round(linear_cka(x, 2 * x @ np.linalg.qr(np.ones((4, 4)) + np.eye(4))[0]), 12)
        1.0
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x = x - x.mean(0)
    y = y - y.mean(0)
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(np.linalg.norm(y.T @ x) ** 2 / den) if den > 0 else float("nan")


@dataclass(frozen=True, slots=True)
class _Rep:
    """One layer for CKA: centred features ``[N, p]`` (``gram`` False) or centred Gram ``[N, N]``."""

    data: np.ndarray
    gram: bool
    norm: float  # ‖Xᵀ X‖_F = ‖X Xᵀ‖_F


def _rep(x: Columns) -> _Rep:
    n, p = x.shape
    mean = np.zeros(p)
    step = _step(n)
    for s in range(0, p, step):
        mean[s : s + step] = np.asarray(x[:, s : s + step], dtype=np.float64).mean(0) if n else 0.0
    if p <= n:
        f = np.asarray(x[:, 0:p], dtype=np.float64) - mean
        return _Rep(f, False, float(np.linalg.norm(f.T @ f)))
    k = np.zeros((n, n))
    for s in range(0, p, step):
        b = np.asarray(x[:, s : s + step], dtype=np.float64) - mean[s : s + step]
        k += b @ b.T
    return _Rep(k, True, float(np.linalg.norm(k)))


def _cross(a: _Rep, b: _Rep) -> float:
    """‖Yᵀ X‖²_F for the two layers, by the cheaper product of their representations."""
    if not a.gram and not b.gram:
        return float(np.linalg.norm(b.data.T @ a.data) ** 2)
    if a.gram and b.gram:
        return float(np.vdot(a.data, b.data))
    g, f = (a, b) if a.gram else (b, a)
    return float(np.vdot(g.data @ f.data, f.data))  # tr(Fᵀ K F)


def cka_matrix(layers_a: Sequence[Columns], layers_b: Sequence[Columns]) -> np.ndarray:
    """Linear CKA between every layer of A and every layer of B (module docstring: the two routes).

    Args:
        layers_a: per layer ``[N, p]`` features of the same N images (memory maps are fine).
        layers_b: the same for B (may be ``layers_a``).

    Returns:
        float64 ``[len(layers_a), len(layers_b)]`` in [0, 1]; NaN where a layer is constant.
        B's layers are held in memory at once (each ``min(p, N)`` columns of N float64), A's one at
        a time.
    """
    reps_b = [_rep(y) for y in layers_b]
    out = np.full((len(layers_a), len(layers_b)), np.nan)
    for i, x in enumerate(layers_a):
        ra = reps_b[i] if layers_a is layers_b else _rep(x)
        for j, rb in enumerate(reps_b):
            den = ra.norm * rb.norm
            if den > 0:
                out[i, j] = min(1.0, max(0.0, _cross(ra, rb) / den))
    return out
