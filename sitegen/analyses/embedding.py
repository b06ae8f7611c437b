"""2-D embedding of per-image features (t-SNE, PCA, optionally UMAP) for the atlas's scatter plots.

t-SNE (van der Maaten & Hinton 2008) of penultimate-layer features is the classic map of what a
network has learned (Karpathy's CNN-codes t-SNE; Zeiler & Fergus-era atlases). scikit-learn's
``TSNE`` with ``init="pca"`` (stable global layout, Kobak & Berens 2019) and a fixed ``random_state``
is deterministic. Perplexity defaults to ``min(30, (N - 1) / 3)``: scikit-learn needs
``perplexity < N``, and 3 × perplexity nearest neighbours must exist for the calibration. Fewer than
5 points fall back to PCA, computed here with numpy (signs fixed as scikit-learn's ``svd_flip``
does, so the result is deterministic too). UMAP (McInnes et al. 2018) is used only when
``umap-learn`` is installed; sitegen does not depend on it.

The returned coordinates are centred and scaled by ONE factor so that the larger axis spans exactly
[-1, 1]: both axes keep the same scale (distances in a t-SNE/PCA map are isotropic).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sitegen.analyses.registry import rounded
from sitegen.errors import SitegenError
from sitegen.spec import EmbeddingSpec
from sitegen.store.formats import EmbeddingDoc

if TYPE_CHECKING:
    from sitegen.analyses.registry import Context
    from sitegen.mine import Mined

__all__ = ["KIND", "METHODS", "Params", "Result", "embed", "run", "save"]

#: Embedding methods.
METHODS = ("tsne", "pca", "umap")

_MIN_TSNE = 5  # fewer points: PCA


def embed(
    features: np.ndarray,
    *,
    method: str = "tsne",
    seed: int = 0,
    perplexity: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Embed ``N`` feature vectors in 2-D.

    Args:
        features: float[N, D], one row per image (e.g. :attr:`sitegen.mine.Mined.features`).
        method: ``"tsne"``, ``"pca"`` or ``"umap"`` (needs ``umap-learn``).
        seed: random state of t-SNE / UMAP.
        perplexity: t-SNE perplexity (default ``min(30, (N - 1) / 3)``); must be below ``N``.
        progress: ``progress(done, total)`` in t-SNE iterations, every 50 (3,040 points take ~14 s
            on one core: issue 13, item 6); called once with ``(total, total)`` at the end.

    Returns:
        float32[N, 2] coordinates in [-1, 1] (centred; the larger axis spans [-1, 1] exactly; all
        zeros when the points coincide). Rows are in the order of ``features``.

    Raises:
        SitegenError: ``method="umap"`` without ``umap-learn`` installed.

    Example:
        >>> xy = embed(np.random.default_rng(0).normal(size=(40, 8)), seed=0)
        >>> xy.shape, float(np.abs(xy).max())
        ((40, 2), 1.0)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or inf")
    if method == "pca" or n < _MIN_TSNE:
        coords = _pca(x)
    elif method == "tsne":
        coords = _tsne(x, seed, perplexity, progress)
    else:
        coords = _umap(x, seed)
    return _scale(coords)


def _pca(x: np.ndarray) -> np.ndarray:
    """Projection on the first two principal axes (zeros where the data has fewer dimensions)."""
    centred = x - x.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    # deterministic signs (scikit-learn svd_flip, u-based): the largest |u| of each axis is positive
    signs = np.sign(u[np.abs(u).argmax(0), np.arange(u.shape[1])])
    signs[signs == 0] = 1
    coords = (u * s * signs)[:, :2]
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords


def _tsne(
    x: np.ndarray, seed: int, perplexity: float | None, progress: Callable[[int, int], None] | None = None
) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = len(x)
    perplexity = min(30.0, (n - 1) / 3) if perplexity is None else float(perplexity)
    if not 0 < perplexity < n:
        raise ValueError(f"perplexity must be in (0, {n}) for {n} points, got {perplexity}")
    if x.shape[1] < 2:  # init="pca" needs two feature columns
        x = np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, verbose=2 if progress else 0
    )
    # One OpenMP thread: scikit-learn's OpenMP runtime and torch's spin against each other in one
    # process; on 2 busy cores 400 points took 77 s with the default threads and 7.5 s with one.
    with threadpool_limits(limits=1, user_api="openmp"), _iterations(progress, tsne.max_iter):
        coords = tsne.fit_transform(x.astype(np.float32))
    if progress is not None:
        progress(tsne.max_iter, tsne.max_iter)  # it may stop early, on convergence
    return coords


class _IterationLog:
    """A stdout stand-in that turns scikit-learn's verbose t-SNE log into ``progress(iteration, total)``.

    ``TSNE`` has no callback; with ``verbose=2`` it prints ``[t-SNE] Iteration 50: error = ...`` every
    50 iterations (scikit-learn 0.17 to 1.9 at least). The log itself is dropped; a line that does not
    parse (another version) only means no progress. ``redirect_stdout`` swaps ``sys.stdout`` for the
    whole process while t-SNE runs; the build's own log goes to stderr.
    """

    _LINE = re.compile(r"\[t-SNE\] Iteration (\d+):")

    def __init__(self, progress: Callable[[int, int], None], total: int) -> None:
        self.progress = progress
        self.total = total

    def write(self, text: str) -> int:
        for m in self._LINE.finditer(text):
            self.progress(min(int(m.group(1)), self.total), self.total)
        return len(text)

    def flush(self) -> None:
        pass


def _iterations(progress: Callable[[int, int], None] | None, total: int) -> contextlib.AbstractContextManager:
    if progress is None:
        return contextlib.nullcontext()
    return contextlib.redirect_stdout(_IterationLog(progress, total))  # type: ignore[type-var]


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap  # type: ignore[import-not-found]
    except ImportError:
        raise SitegenError(
            "embedding method 'umap' needs the umap-learn package (pip install umap-learn); "
            "or use method 'tsne' or 'pca'"
        ) from None
    reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1))
    return reducer.fit_transform(x)


def _scale(coords: np.ndarray) -> np.ndarray:
    coords = np.asarray(coords, dtype=np.float64)
    lo, hi = coords.min(0), coords.max(0)
    half = (hi - lo).max() / 2
    if half <= 0 or not np.isfinite(half):
        return np.zeros_like(coords, dtype=np.float32)
    out = (coords - (lo + hi) / 2) / half
    return np.clip(out, -1.0, 1.0).astype(np.float32)


# --- the atlas entry (issue 12: sitegen.analyses.registry) ------------------------------------------

KIND = "embedding"
Params = EmbeddingSpec


@dataclass(frozen=True, slots=True)
class Result:
    """2-D coordinates of the probe set's penultimate features (``mined.features``)."""

    method: str
    dim: int
    coords: np.ndarray  # float32 [N, 2]
    labels: np.ndarray  # int64 [N]
    predicted: np.ndarray  # int64 [N]


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    """t-SNE / PCA / UMAP of the features mining kept (None: the net has no linear layer)."""
    feats = mined.features
    if feats is None or len(feats) == 0:
        return None
    coords = embed(
        feats,
        method=params.method,
        seed=ctx.seed,
        perplexity=params.perplexity,
        progress=lambda done, total: ctx.progress(KIND, done, total),
    )
    return Result(
        method=params.method if len(feats) >= _MIN_TSNE else "pca",
        dim=int(feats.shape[1]),
        coords=coords,
        labels=np.asarray(mined.labels),
        predicted=np.asarray(mined.top5[:, 0]),
    )


def save(ctx: Context, result: Result, out: Path) -> EmbeddingDoc:
    return EmbeddingDoc(
        method=result.method,
        dim=result.dim,
        x=rounded(result.coords[:, 0]),
        y=rounded(result.coords[:, 1]),
        labels=result.labels.tolist(),
        predicted=result.predicted.tolist(),
    )
