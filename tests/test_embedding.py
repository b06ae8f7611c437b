"""2-D embeddings (sitegen.analyses.embedding)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import sklearn.manifold  # noqa: F401  (loads its OpenMP runtime, so threadpool_limits below reaches it)
from threadpoolctl import threadpool_limits

from sitegen.analyses.embedding import embed


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # 45 points: OpenMP/BLAS threads only add barrier waits on a shared 2-core machine
    with threadpool_limits(1):
        yield


def blobs(per_blob: int = 15, dims: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian blobs (centres 20 apart, unit spread)."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((3, dims))
    centres[1, 0] = centres[2, 1] = 20.0
    labels = np.repeat(np.arange(3), per_blob)
    return (centres[labels] + rng.normal(size=(len(labels), dims))).astype(np.float32), labels


def assert_separated(xy: np.ndarray, labels: np.ndarray) -> None:
    centroids = np.stack([xy[labels == c].mean(0) for c in range(3)])
    dist = np.linalg.norm(xy[:, None] - centroids[None], axis=2)
    assert np.array_equal(dist.argmin(1), labels)


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_shape_range_clusters_and_determinism(method: str) -> None:
    x, labels = blobs()
    xy = embed(x, method=method, seed=3)
    assert xy.dtype == np.float32 and xy.shape == (len(x), 2)
    assert np.abs(xy).max() == pytest.approx(1.0) and xy.min() >= -1.0
    assert_separated(xy, labels)
    calls: list[tuple[int, int]] = []
    np.testing.assert_array_equal(xy, embed(x, method=method, seed=3, progress=lambda *a: calls.append(a)))
    if method == "tsne":  # scikit-learn's log turned into iterations: every 50, then the end
        assert calls[0] == (50, 1000) and calls[-1] == (1000, 1000)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)
        assert len(calls) >= 6  # the 250 exploration iterations at least


def test_pca_known_line() -> None:
    # points on a line along (1, 1, 0): first axis is the line, second is zero; larger axis spans [-1, 1]
    t = np.array([0.0, 1.0, 2.0, 4.0])
    x = np.stack([t, t, np.zeros_like(t)], 1)
    xy = embed(x, method="pca")
    np.testing.assert_allclose(xy[:, 1], 0.0, atol=1e-6)
    np.testing.assert_allclose(np.abs(xy[:, 0]), [1.0, 0.5, 0.0, 1.0], atol=1e-6)
    assert xy[0, 0] == -xy[3, 0]


@pytest.mark.parametrize("n", [0, 1, 2, 4])
def test_few_points_fall_back_to_pca(n: int) -> None:
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3) ** 2
    xy = embed(x, method="tsne", seed=0)
    assert xy.shape == (n, 2) and np.isfinite(xy).all()
    np.testing.assert_array_equal(xy, embed(x, method="pca"))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        embed(np.zeros((6, 2)), method="mds")
    with pytest.raises(ValueError, match="perplexity"):
        embed(np.random.default_rng(0).normal(size=(6, 2)), perplexity=6)
