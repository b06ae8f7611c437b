"""Stroke density, complexity, Spearman's rho and the density correlation (sitegen.analyses.stroke)."""

from __future__ import annotations

import numpy as np
import pytest

from sitegen.analyses.stroke import (
    ClassStats,
    class_stats,
    density_correlation,
    edge_density,
    ink_density,
    spearman,
)


def white(h: int = 10, w: int = 10) -> np.ndarray:
    return np.full((h, w, 3), 255, np.uint8)


def sketch(ink_pixels: int, h: int = 10, w: int = 10) -> np.ndarray:
    """White image with ``ink_pixels`` black pixels, row-major inside a 1-pixel white margin."""
    img = white(h, w)
    inner = img[1:-1, 1:-1].reshape(-1, 3)  # a copy: write back below
    inner[:ink_pixels] = 0
    img[1:-1, 1:-1] = inner.reshape(h - 2, w - 2, 3)
    return img


def step(h: int = 10, w: int = 10) -> np.ndarray:
    """Left half black, right half white: a vertical edge between columns w/2 - 1 and w/2."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2 :] = 255
    return img


def test_ink_share_of_hand_made_sketches() -> None:
    img = white()
    img[2, 1:9] = img[7, 1:9] = img[3:7, 4] = 0  # 8 + 8 + 4 = 20 black pixels
    assert ink_density(img) == pytest.approx(0.2)
    assert ink_density(sketch(20)) == pytest.approx(0.2)
    assert ink_density(white()) == 0.0
    inverted = 255 - sketch(30)  # light strokes on black count the same
    assert ink_density(inverted) == pytest.approx(0.3)
    faint = white()
    faint[4, :5] = 200  # 55 levels from the background: below the default threshold of 64
    assert ink_density(faint) == 0.0
    assert ink_density(faint, threshold=50) == pytest.approx(0.05)


def test_edge_density_of_a_step_image() -> None:
    # Sobel marks the two columns beside the step (magnitude 1), nothing along the replicated frame
    assert edge_density(step()) == pytest.approx(20 / 100)
    assert edge_density(step(8, 16)) == pytest.approx(16 / 128)
    assert edge_density(np.full((8, 8, 3), 90, np.uint8)) == 0.0
    assert edge_density(step() // 8, threshold=0.25) == 0.0  # a step of 31 levels is too weak


def test_class_stats_means_per_class() -> None:
    images = [sketch(10), sketch(30), sketch(50), white(), sketch(5)]
    labels = [0, 0, 1, 1, 2]
    stats = class_stats(iter(images), labels, 4, kind="sketch")
    assert isinstance(stats, ClassStats) and stats.kind == "sketch"
    np.testing.assert_allclose(stats.density[:3], [0.2, 0.25, 0.05])
    assert np.isnan(stats.density[3]) and np.isnan(stats.complexity[3])
    assert stats.n.tolist() == [2.0, 2.0, 1.0, 0.0]
    # PNG bytes grow with the strokes drawn
    single = class_stats([white(32, 32), sketch(300, 32, 32)], [0, 1], 2, kind="sketch")
    assert single.complexity[1] > single.complexity[0] > 0


def test_auto_kind() -> None:
    sketches = [sketch(k) for k in range(0, 64, 8)]
    assert class_stats(sketches, [0] * 8, 1).kind == "sketch"
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (10, 10, 3), dtype=np.uint8) for _ in range(8)]
    stats = class_stats(photos, [0] * 8, 1)
    assert stats.kind == "photo"
    assert stats.density[0] == pytest.approx(np.mean([edge_density(p) for p in photos]))


def test_class_stats_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="outside range"):
        class_stats([white()], [3], 2, kind="sketch")
    with pytest.raises(ValueError, match="kind must be one of"):
        class_stats([white()], [0], 1, kind="drawing")
    with pytest.raises(ValueError):
        class_stats([white(), white()], [0], 1, kind="sketch")  # lengths differ


def test_spearman_known_values() -> None:
    # no ties: a monotone transform gives 1, a reversal -1
    assert spearman([1, 2, 3, 4, 5], [1, 8, 27, 64, 125]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # hand computation with ties: ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4), centred
    # (-1.5, 0, 0, 1.5) and (-1.5, 0.5, -0.5, 1.5): rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(np.sqrt(0.9))
    # 1 - 6 sum d^2 / (n (n^2 - 1)) without ties: d = (0, 1, -1, 1, -1) -> 1 - 24 / 120 = 0.8
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 5, 4]) == pytest.approx(0.8)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert spearman([1, np.nan, 2, 3], [3, 0, 2, 1]) == pytest.approx(-1.0)  # NaN pair left out


def test_spearman_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 6, 40).astype(float)  # many ties
    b = a + rng.integers(0, 4, 40)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_density_correlation_sign() -> None:
    density = np.array([0.05, 0.30, 0.10, 0.20, np.nan])  # class 4 has no probe images
    preference = {
        "conv1": np.array([1.0, 9.0, 2.0, 5.0, 7.0]),  # follows density
        "fc7": np.array([8.0, 1.0, 6.0, 3.0, 0.0]),  # opposes it
        "flat": np.full(5, 2.0),
    }
    rho = density_correlation(preference, density)
    assert list(rho) == ["conv1", "fc7", "flat"]
    assert rho["conv1"] == pytest.approx(1.0)
    assert rho["fc7"] == pytest.approx(-1.0)
    assert np.isnan(rho["flat"])
    with pytest.raises(ValueError, match="shape"):
        density_correlation({"conv1": np.ones(3)}, density)
