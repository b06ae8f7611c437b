"""Rank-weighted class histograms: a worked example by hand, purity, exemplars, overall preference."""

from __future__ import annotations

import numpy as np
import pytest

from sitegen.analyses.class_hist import class_histograms, class_preference, overall_preference

# The worked example: 8 probe images, 6 classes (4 and 5 never occur), 3 units, k = 3.
LABELS = np.array([0, 1, 1, 2, 3, 1, 0, 2])  # class of probe image i
TOPK_IMAGES = np.array(
    [
        [0, 1, 2],  # unit 0: classes 0, 1, 1
        [3, 6, -1],  # unit 1: classes 2, 0, (empty)
        [5, 2, 4],  # unit 2: classes 1, 1, 3
    ]
)
TOPK_LABELS = np.array([[0, 1, 1], [2, 0, -1], [1, 1, 3]])


def test_worked_example_histograms() -> None:
    per_rank, weighted = class_histograms(TOPK_LABELS, 6)
    # rank 1: classes 0, 2, 1 · rank 2: 1, 0, 1 · rank 3: 1, (empty), 3
    expected = [
        [1, 1, 1, 0, 0, 0],
        [1, 2, 0, 0, 0, 0],
        [0, 1, 0, 1, 0, 0],
    ]
    np.testing.assert_array_equal(per_rank, expected)
    # weights k + 1 - r = 3, 2, 1:
    #   class 0: 3*1 + 2*1 = 5 · class 1: 3*1 + 2*2 + 1*1 = 8 · class 2: 3 · class 3: 1 · 4, 5: 0
    np.testing.assert_array_equal(weighted, [5, 8, 3, 1, 0, 0])
    assert per_rank.dtype == np.float64 and weighted.dtype == np.float64


def test_rank_weights_for_k9_are_the_studys_10_minus_r() -> None:
    # Unit r's rank-r image has class r (other slots empty): the weights show up one per class.
    labels = np.full((9, 9), -1)
    labels[np.arange(9), np.arange(9)] = np.arange(9)
    per_rank, weighted = class_histograms(labels, 9)
    np.testing.assert_array_equal(per_rank, np.eye(9))
    np.testing.assert_array_equal(weighted, 10 - np.arange(1, 10))


def test_worked_example_preference() -> None:
    pref = class_preference(TOPK_IMAGES, LABELS, 6)
    np.testing.assert_array_equal(pref.weighted, [5, 8, 3, 1, 0, 0])
    # Scores 8 > 5 > 3 > 1 > 0 = 0: the tie between classes 4 and 5 goes to the lower index.
    np.testing.assert_array_equal(pref.top5, [1, 0, 2, 3, 4])
    np.testing.assert_array_equal(pref.bottom5, [4, 5, 3, 2, 0])
    # unit 0: 1, 1 of 3 -> 2/3 class 1 · unit 1: 2 and 0 once each of 2 -> 1/2, tie -> class 0
    # unit 2: 1, 1 of 3 -> 2/3 class 1
    np.testing.assert_allclose(pref.purity, [2 / 3, 1 / 2, 2 / 3])
    np.testing.assert_array_equal(pref.dominant, [1, 0, 1])
    # Image weights (rank 1..3 weigh 3, 2, 1): img0 3, img1 2, img2 1 + 2 = 3, img3 3, img4 1,
    # img5 3, img6 2, img7 0.
    #   class 0 {0, 6}: 0 (3), 6 (2)                      -> [0, 6, -1]
    #   class 1 {1, 2, 5}: 2 (3), 5 (3, tie: index), 1 (2) -> [2, 5, 1]
    #   class 2 {3, 7}: 3 (3), then 7 fills up           -> [3, 7, -1]
    #   class 3 {4}                                       -> [4, -1, -1]
    #   classes 4, 5: no images                          -> -1
    np.testing.assert_array_equal(
        pref.exemplars,
        [[0, 6, -1], [2, 5, 1], [3, 7, -1], [4, -1, -1], [-1, -1, -1], [-1, -1, -1]],
    )
    assert pref.exemplars.dtype == np.int64 and pref.dominant.dtype == np.int64
    np.testing.assert_array_equal(pref.per_rank, class_histograms(TOPK_LABELS, 6)[0])


def test_exemplars_fill_with_first_images_of_the_class() -> None:
    labels = np.array([1, 0, 1, 1, 1, 0])
    # Only image 4 appears in a table; class 1 is filled with its first images 0, 2, then 3.
    pref = class_preference(np.array([[4, -1]]), labels, 2, n_exemplars=4)
    np.testing.assert_array_equal(pref.exemplars, [[1, 5, -1, -1], [4, 0, 2, 3]])


def test_units_without_images() -> None:
    pref = class_preference(np.full((2, 3), -1), np.array([0, 1]), 3)
    np.testing.assert_array_equal(pref.purity, [0, 0])
    np.testing.assert_array_equal(pref.dominant, [-1, -1])
    np.testing.assert_array_equal(pref.weighted, [0, 0, 0])
    np.testing.assert_array_equal(pref.top5, [0, 1, 2])


def test_overall_preference_normalizes_each_layer() -> None:
    overall = overall_preference([np.array([1.0, 1.0, 2.0]), np.array([0.0, 3.0, 1.0]), np.zeros(3)])
    # [1/4, 1/4, 1/2] + [0, 3/4, 1/4] + nothing for the empty layer
    np.testing.assert_allclose(overall, [0.25, 1.0, 0.75])


def test_bad_labels_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        class_histograms(np.array([[0, 3]]), 3)
    with pytest.raises(ValueError, match="out of range"):
        class_preference(np.array([[5]]), np.array([0, 1]), 2)
