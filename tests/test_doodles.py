"""The built-in doodles: deterministic, every class drawable at any size, densities that differ."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from sitegen import doodles
from sitegen.doodles import CLASSES, draw, make_doodle, make_doodles

CANONICAL = (
    "circle", "square", "triangle", "star", "spiral", "zigzag",
    "wheel", "grid", "sun", "house", "ladder", "wave",
)


def _ink(img) -> float:
    """Share of ink: 0 for a white image, 1 for a black one."""
    return float((255 - np.asarray(img, dtype=np.float64)).mean() / 255)


def test_classes_start_with_the_canonical_twelve():
    assert CLASSES[:12] == CANONICAL
    assert len(CLASSES) >= 12
    assert len(set(CLASSES)) == len(CLASSES)


def test_same_seed_same_pixels_other_seed_other_pixels():
    a = make_doodles(CANONICAL, 3, 32, seed=7)
    b = make_doodles(CANONICAL, 3, 32, seed=7)
    c = make_doodles(CANONICAL, 3, 32, seed=8)
    assert [img.tobytes() for img, _ in a] == [img.tobytes() for img, _ in b]
    assert all(x.tobytes() != z.tobytes() for (x, _), (z, _) in zip(a, c, strict=True))


def test_images_do_not_depend_on_count_or_class_selection():
    few = make_doodles(["star", "house"], 2, 32, seed=0)
    many = make_doodles(["circle", "star", "grid", "house"], 4, 32, seed=0)
    by_class = {(label, i % 2): img.tobytes() for i, (img, label) in enumerate(few)}
    assert by_class[(0, 0)] == many[4][0].tobytes()  # star #0
    assert by_class[(0, 1)] == many[5][0].tobytes()  # star #1
    assert by_class[(1, 0)] == many[12][0].tobytes()  # house #0
    assert make_doodle("house", 1, 32, 0).tobytes() == many[13][0].tobytes()


def test_labels_follow_the_given_class_order():
    pairs = make_doodles(["wave", "circle"], 3, 16, seed=0)
    assert [label for _, label in pairs] == [0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("name", CLASSES)
def test_every_class_draws_ink_on_white(name, size):
    img = draw(name, size, random.Random(3))
    assert img.mode == "L"
    assert img.size == (size, size)
    a = np.asarray(img)
    assert a.min() < 80, "some stroke is dark"
    assert 0.01 < _ink(img) < 0.4, "a sketch, not a blank or a blot"
    assert np.median(a) == 255, "white background"


@pytest.mark.parametrize("name", CLASSES)
def test_shapes_stay_inside_the_frame(name):
    for i in range(6):
        a = np.asarray(make_doodle(name, i, 128, seed=1))
        ring = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
        assert ring.min() == 255, f"{name} #{i} touches the border"


def test_stroke_density_differs_by_class():
    def mean_ink(name: str) -> float:
        return float(np.mean([_ink(make_doodle(name, i, 64, 0)) for i in range(12)]))

    sparse = max(mean_ink("cross"), mean_ink("circle"), mean_ink("wave"))
    dense = min(mean_ink("grid"), mean_ink("wheel"), mean_ink("spiral"))
    assert dense > 1.8 * sparse


def test_variation_within_a_class():
    imgs = [np.asarray(make_doodle("square", i, 64, 0), dtype=np.float64) for i in range(4)]
    assert all(np.abs(imgs[0] - other).mean() > 5 for other in imgs[1:])


def test_unknown_class_is_a_value_error():
    with pytest.raises(ValueError, match="unknown doodles class 'hexagon'"):
        draw("hexagon", 32, random.Random(0))


def test_importing_doodles_needs_neither_torch_nor_numpy():
    code = (
        "import sys; import sitegen.doodles; "
        "bad = [m for m in ('torch', 'numpy') if m in sys.modules]; "
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr or done.stdout


def test_version_is_an_int_for_fingerprints():
    assert isinstance(doodles.VERSION, int)
