"""The outline of an activation map above a threshold, as an SVG path (issue 15, item 7).

NetDissect (Bau et al. 2017) upsamples a unit's map to the image and keeps the pixels above ``T_k``.
Here the upsampling is bilinear between the receptive-field centres of the map's positions (row ``i``
sits at ``offset + i * stride + 0.5`` in continuous image coordinates, pixel ``p`` spanning
``[p, p + 1)``), constant from the outermost centres to the image edge (grid_sample's border mode), and
the region's boundary is drawn as a vector contour: marching squares (Lorensen & Cline 1987) on the
map's grid, crossings linearly interpolated along the grid edges, saddles resolved by the cell's mean
(the bilinear surface's value at its centre). The contour is resolution-free: the same path serves
the full image (viewBox = the image) and the receptive-field patch (viewBox = the patch's box).

Every region is closed: the grid is padded with one ring that replicates the border values at the
image edge and a second ring, at the same place, below the threshold, so a region that reaches the
edge is closed along it. Numpy only (render never imports torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["centres", "contour", "svg_path"]

# Marching-squares table: corner bits tl=8, tr=4, br=2, bl=1 (inside = value > level) -> pairs of cell
# edges T(op) R(ight) B(ottom) L(eft) joined by a segment. Saddles (5, 10) are resolved in contour().
_SEGMENTS: dict[int, tuple[tuple[str, str], ...]] = {
    1: (("L", "B"),),
    2: (("B", "R"),),
    3: (("L", "R"),),
    4: (("T", "R"),),
    6: (("T", "B"),),
    7: (("T", "L"),),
    8: (("T", "L"),),
    9: (("T", "B"),),
    11: (("T", "R"),),
    12: (("L", "R"),),
    13: (("R", "B"),),
    14: (("L", "B"),),
}
# saddles: (case, centre inside) -> segments
_SADDLES: dict[tuple[int, bool], tuple[tuple[str, str], ...]] = {
    (5, True): (("T", "L"), ("R", "B")),  # tr and bl joined through the centre: tl, br cut off
    (5, False): (("T", "R"), ("L", "B")),
    (10, True): (("T", "R"), ("L", "B")),  # tl and br joined: tr, bl cut off
    (10, False): (("T", "L"), ("R", "B")),
}


def centres(n: int, stride: float, offset: float) -> np.ndarray:
    """Continuous image coordinates of the receptive-field centres of ``n`` map positions."""
    return offset + stride * np.arange(n, dtype=np.float64) + 0.5


def _padded(values: np.ndarray, level: float, ys: np.ndarray, xs: np.ndarray, size: tuple[float, float]):
    """The map with the two rings (see the module doc) and the coordinates of its rows and columns."""
    v = np.pad(np.asarray(values, dtype=np.float64), 1, mode="edge")
    low = min(float(np.min(values)), level) - 1.0
    v = np.pad(v, 1, mode="constant", constant_values=low)
    h, w = size
    y0, y1 = min(0.0, float(ys[0])), max(float(h), float(ys[-1]))
    x0, x1 = min(0.0, float(xs[0])), max(float(w), float(xs[-1]))
    py = np.concatenate([[y0, y0], ys, [y1, y1]])
    px = np.concatenate([[x0, x0], xs, [x1, x1]])
    return v, py, px


def contour(
    values: np.ndarray,
    level: float,
    ys: Sequence[float] | np.ndarray,
    xs: Sequence[float] | np.ndarray,
    size: tuple[float, float],
) -> list[np.ndarray]:
    """Closed loops around the region where the interpolated map exceeds ``level``.

    Args:
        values: the map ``[rows, cols]``.
        level: the threshold (inside: ``value > level``).
        ys: continuous image row of each map row's centre (ascending); ``xs`` likewise for columns.
        size: ``(height, width)`` of the image in pixels.

    Returns:
        One ``[n, 2]`` float array of (row, col) vertices per loop (closed: the last joins the first).
    """
    v, py, px = _padded(values, level, np.asarray(ys, float), np.asarray(xs, float), size)
    inside = v > level
    case = (inside[:-1, :-1] * 8 + inside[:-1, 1:] * 4 + inside[1:, 1:] * 2 + inside[1:, :-1] * 1).astype(
        np.int64
    )
    mean = (v[:-1, :-1] + v[:-1, 1:] + v[1:, 1:] + v[1:, :-1]) / 4

    def point(edge: tuple[str, int, int]) -> tuple[float, float]:
        kind, r, c = edge
        if kind == "h":  # between (r, c) and (r, c + 1)
            a, b = v[r, c], v[r, c + 1]
            t = (level - a) / (b - a)
            return float(py[r]), float(px[c] + t * (px[c + 1] - px[c]))
        a, b = v[r, c], v[r + 1, c]
        t = (level - a) / (b - a)
        return float(py[r] + t * (py[r + 1] - py[r])), float(px[c])

    links: dict[tuple[str, int, int], list[tuple[str, int, int]]] = {}
    for r, c in zip(*np.nonzero((case > 0) & (case < 15)), strict=True):
        k = int(case[r, c])
        sides = {"T": ("h", r, c), "B": ("h", r + 1, c), "L": ("v", r, c), "R": ("v", r, c + 1)}
        segs = _SADDLES[(k, bool(mean[r, c] > level))] if k in (5, 10) else _SEGMENTS[k]
        for e1, e2 in segs:
            a, b = sides[e1], sides[e2]
            links.setdefault(a, []).append(b)
            links.setdefault(b, []).append(a)
    loops = []
    seen: set[tuple[str, int, int]] = set()
    for start in sorted(links):
        if start in seen:
            continue
        loop, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [e for e in links[cur] if e != prev]
            step = nxt[0] if nxt else links[cur][0]
            if step == start:
                break
            if step in seen:  # a degenerate join (cannot happen for a closed contour); end the loop
                break
            loop.append(step)
            seen.add(step)
            prev, cur = cur, step
        loops.append(np.array([point(e) for e in loop], dtype=np.float64))
    return loops


def _loop_text(loop: np.ndarray, scale: int) -> list[str]:
    """The loop's vertices rounded to ``1 / scale`` px as ``"x y"`` strings, repeated vertices and
    vertices on a straight line between their neighbours left out (exact: integers of 1 / scale)."""
    q = np.rint(loop[:, ::-1] * scale).astype(np.int64)  # (x, y) = (col, row)
    q = q[np.any(q != np.roll(q, 1, axis=0), axis=1)]
    if len(q) >= 3:
        d1, d2 = q - np.roll(q, 1, axis=0), np.roll(q, -1, axis=0) - q
        q = q[d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] != 0]
    if len(q) < 3:
        return []
    if scale == 1:
        return [f"{x} {y}" for x, y in q.tolist()]
    return [f"{x / scale:g} {y / scale:g}" for x, y in q.tolist()]


def svg_path(loops: Sequence[np.ndarray], digits: int = 1) -> str:
    """SVG path data of closed loops of (row, col) vertices: ``M x y x y … Z`` per loop (x = col)."""
    scale = 10**digits
    parts = []
    for loop in loops:
        pts = _loop_text(np.asarray(loop, dtype=np.float64), scale)
        if pts:
            parts.append("M" + " ".join(pts) + "Z")
    return "".join(parts)
