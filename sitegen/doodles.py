"""Doodles: procedural line sketches in the spirit of TU-Berlin (Eitz et al. 2012), drawn offline.

The embedded default cannot download a dataset, so sitegen draws one: black wobbly strokes on
white, one simple shape per class, with random position, scale, rotation, aspect, stroke width and a
hand-drawn tremor. Everything is deterministic by seed, and each image has its own generator seeded
from ``(seed, class name, index)``, so drawing more images per class, or fewer classes, never changes
the images already drawn.

Classes differ on purpose in stroke density (how much ink a sketch has): ``cross``, ``wave`` and
``circle`` are sparse, ``grid``, ``wheel`` and ``scribble`` are dense. The project studies class
preference against stroke density, so keep that spread when adding classes.

Pure Python + Pillow: :mod:`sitegen.spec` imports :data:`CLASSES` from here, and the spec must load
without torch or numpy.

Example:
    >>> img = make_doodle("house", 0, 64, seed=0)
    >>> img.mode, img.size
    ('L', (64, 64))
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from PIL import Image, ImageDraw

#: Bump when the drawing code changes pixels: it is part of the dataset fingerprint (store cache keys).
VERSION = 1

Point = tuple[float, float]
#: One pen stroke in the shape's own frame (roughly [-1, 1]², row axis pointing down): points, closed?
Stroke = tuple[list[Point], bool]

_TAU = 2 * math.pi
_MARGIN = 0.05  # blank border, as a fraction of the canvas, that the shape's bounding box keeps
_STEP = 0.025  # resampling step along a stroke (canvas units): dense enough for a smooth wobble


# --- shapes ------------------------------------------------------------------------------------------
# Each shape returns strokes in its own frame; draw() places, rotates and wobbles them.


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48, phase: float = 0.0) -> list[Point]:
    angles = [phase + _TAU * i / n for i in range(n)]
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _segment(a: Point, b: Point, rng: random.Random, overshoot: float = 0.06) -> Stroke:
    """A straight stroke that, like a hand-drawn one, may run a little past its ends."""
    (ax, ay), (bx, by) = a, b
    e0, e1 = rng.uniform(0, overshoot), rng.uniform(0, overshoot)
    dx, dy = bx - ax, by - ay
    return [(ax - e0 * dx, ay - e0 * dy), (bx + e1 * dx, by + e1 * dy)], False


def _circle(rng: random.Random) -> list[Stroke]:
    return [(_ellipse(0, 0, 1, 1, phase=rng.uniform(0, _TAU)), True)]


def _square(rng: random.Random) -> list[Stroke]:
    return [([(-1, -1), (1, -1), (1, 1), (-1, 1)], True)]


def _triangle(rng: random.Random) -> list[Stroke]:
    pts = []
    for degrees in (-90, 30, 150):  # an equilateral triangle, each corner pulled in or out a little
        r, a = rng.uniform(0.85, 1.15), math.radians(degrees)
        pts.append((r * math.cos(a), r * math.sin(a)))
    return [(pts, True)]


def _star(rng: random.Random) -> list[Stroke]:
    inner = rng.uniform(0.35, 0.5)
    pts = []
    for i in range(10):
        r = 1.0 if i % 2 == 0 else inner
        a = -math.pi / 2 + _TAU * i / 10
        pts.append((r * math.cos(a), r * math.sin(a)))
    return [(pts, True)]


def _spiral(rng: random.Random) -> list[Stroke]:
    turns = rng.uniform(2.5, 3.75)
    direction = rng.choice((-1, 1))
    n = int(turns * 40)
    pts = []
    for i in range(n + 1):
        t = i / n
        r, a = 0.06 + 0.94 * t, direction * _TAU * turns * t
        pts.append((r * math.cos(a), r * math.sin(a)))
    return [(pts, False)]


def _zigzag(rng: random.Random) -> list[Stroke]:
    teeth = rng.randint(4, 7)
    amp = rng.uniform(0.3, 0.6)
    n = 2 * teeth
    return [([(-1 + 2 * i / n, amp if i % 2 else -amp) for i in range(n + 1)], False)]


def _wheel(rng: random.Random) -> list[Stroke]:
    spokes = rng.randint(5, 10)
    hub = rng.uniform(0.12, 0.25) if rng.random() < 0.5 else 0.0
    strokes: list[Stroke] = [(_ellipse(0, 0, 1, 1, phase=rng.uniform(0, _TAU)), True)]
    if hub:
        strokes.append((_ellipse(0, 0, hub, hub, n=16), True))
    phase = rng.uniform(0, _TAU)
    for i in range(spokes):
        a = phase + _TAU * i / spokes
        c, s = math.cos(a), math.sin(a)
        strokes.append(_segment((hub * c, hub * s), (c, s), rng, overshoot=0.03))
    return strokes


def _grid(rng: random.Random) -> list[Stroke]:
    rows, cols = rng.randint(3, 5), rng.randint(3, 5)
    ys = [-1 + 2 * i / (rows - 1) for i in range(rows)]
    xs = [-1 + 2 * j / (cols - 1) for j in range(cols)]
    return [_segment((-1, y), (1, y), rng) for y in ys] + [_segment((x, -1), (x, 1), rng) for x in xs]


def _sun(rng: random.Random) -> list[Stroke]:
    r = rng.uniform(0.3, 0.45)
    rays = rng.randint(8, 14)
    strokes: list[Stroke] = [(_ellipse(0, 0, r, r, n=32, phase=rng.uniform(0, _TAU)), True)]
    phase = rng.uniform(0, _TAU)
    for i in range(rays):
        a = phase + _TAU * i / rays
        r0, r1 = r + rng.uniform(0.08, 0.15), rng.uniform(0.8, 1.0)
        strokes.append(([(r0 * math.cos(a), r0 * math.sin(a)), (r1 * math.cos(a), r1 * math.sin(a))], False))
    return strokes


def _house(rng: random.Random) -> list[Stroke]:
    strokes: list[Stroke] = [
        ([(-0.75, -0.15), (0.75, -0.15), (0.75, 1), (-0.75, 1)], True),  # body
        ([(-0.9, -0.05), (0, -1), (0.9, -0.05)], False),  # roof, eaves overhanging
    ]
    door = rng.uniform(-0.4, 0.4)
    strokes.append(([(door - 0.17, 1), (door - 0.17, 0.45), (door + 0.17, 0.45), (door + 0.17, 1)], False))
    if rng.random() < 0.7:  # a window on the side away from the door
        wx = -0.45 if door > 0 else 0.45
        strokes.append(([(wx - 0.15, 0.05), (wx + 0.15, 0.05), (wx + 0.15, 0.32), (wx - 0.15, 0.32)], True))
        if rng.random() < 0.5:
            strokes.append(([(wx, 0.05), (wx, 0.32)], False))
            strokes.append(([(wx - 0.15, 0.185), (wx + 0.15, 0.185)], False))
    if rng.random() < 0.3:  # chimney standing on the right roof slope
        strokes.append(([(0.42, -0.58), (0.42, -0.88), (0.6, -0.88), (0.6, -0.38)], False))
    return strokes


def _ladder(rng: random.Random) -> list[Stroke]:
    half = rng.uniform(0.3, 0.5)
    rungs = rng.randint(4, 8)
    strokes = [_segment((-half, -1), (-half, 1), rng, 0.02), _segment((half, -1), (half, 1), rng, 0.02)]
    for i in range(1, rungs + 1):
        y = -1 + 2 * i / (rungs + 1)
        strokes.append(([(-half, y), (half, y)], False))
    return strokes


def _wave(rng: random.Random) -> list[Stroke]:
    periods, amp, phase = rng.uniform(1.5, 3.0), rng.uniform(0.25, 0.5), rng.uniform(0, _TAU)
    n = 64
    return [([(-1 + 2 * i / n, amp * math.sin(phase + _TAU * periods * i / n)) for i in range(n + 1)], False)]


def _cross(rng: random.Random) -> list[Stroke]:
    return [
        _segment((-rng.uniform(0.7, 1), 0), (rng.uniform(0.7, 1), 0), rng, 0.02),
        _segment((0, -rng.uniform(0.7, 1)), (0, rng.uniform(0.7, 1)), rng, 0.02),
    ]


def _arrow(rng: random.Random) -> list[Stroke]:
    head, half = rng.uniform(0.35, 0.55), rng.uniform(0.25, 0.45)
    return [
        _segment((-1, 0), (1, 0), rng, 0.0),
        ([(1 - head, -half), (1, 0), (1 - head, half)], False),
    ]


def _flower(rng: random.Random) -> list[Stroke]:
    rc = rng.uniform(0.15, 0.25)
    petals = rng.randint(5, 8)
    strokes: list[Stroke] = [(_ellipse(0, 0, rc, rc, n=20), True)]
    a_len, b_len = (1 - rc) / 2, rng.uniform(0.12, 0.2)
    phase = rng.uniform(0, _TAU)
    for i in range(petals):
        a = phase + _TAU * i / petals
        c, s = math.cos(a), math.sin(a)
        d = rc + a_len
        # a petal is an ellipse along the ray, touching the centre circle
        pts = [(d * c + a_len * math.cos(t) * c - b_len * math.sin(t) * s,
                d * s + a_len * math.cos(t) * s + b_len * math.sin(t) * c)
               for t in (_TAU * k / 24 for k in range(24))]
        strokes.append((pts, True))
    return strokes


def _scribble(rng: random.Random) -> list[Stroke]:
    pts = [(rng.uniform(-1, 1), rng.uniform(-1, 1)) for _ in range(rng.randint(9, 14))]
    for _ in range(3):  # Chaikin corner cutting: a smooth, loopy line through random points
        cut = [pts[0]]
        for (ax, ay), (bx, by) in pairwise(pts):
            cut.append((0.75 * ax + 0.25 * bx, 0.75 * ay + 0.25 * by))
            cut.append((0.25 * ax + 0.75 * bx, 0.25 * ay + 0.75 * by))
        pts = cut + [pts[-1]]
    return [(pts, False)]


@dataclass(frozen=True, slots=True)
class _Shape:
    strokes: Callable[[random.Random], list[Stroke]]
    tilt: float  # max rotation in radians either way (math.pi: any orientation)


_SHAPES: dict[str, _Shape] = {
    # the first twelve, in this order, are the canonical set (``classes: {top: 12}``)
    "circle": _Shape(_circle, math.pi),
    "square": _Shape(_square, 0.3),
    "triangle": _Shape(_triangle, 0.3),
    "star": _Shape(_star, math.pi),
    "spiral": _Shape(_spiral, math.pi),
    "zigzag": _Shape(_zigzag, 0.35),
    "wheel": _Shape(_wheel, math.pi),
    "grid": _Shape(_grid, 0.25),
    "sun": _Shape(_sun, math.pi),
    "house": _Shape(_house, 0.2),
    "ladder": _Shape(_ladder, 0.3),
    "wave": _Shape(_wave, 0.35),
    "cross": _Shape(_cross, 0.3),
    "arrow": _Shape(_arrow, math.pi),
    "flower": _Shape(_flower, math.pi),
    "scribble": _Shape(_scribble, math.pi),
}

#: Class names in label order: the twelve canonical classes first, then the extras.
CLASSES: tuple[str, ...] = tuple(_SHAPES)


# --- drawing -----------------------------------------------------------------------------------------


def _resample(points: list[Point], closed: bool, rng: random.Random) -> list[Point]:
    """Points every ``_STEP`` along the stroke (corners kept); closed loops overshoot or leave a gap."""
    path = points + [points[0]] if closed else points
    out = [path[0]]
    for (ax, ay), (bx, by) in pairwise(path):
        n = max(1, math.ceil(math.hypot(bx - ax, by - ay) / _STEP))
        out += [(ax + (bx - ax) * k / n, ay + (by - ay) * k / n) for k in range(1, n + 1)]
    if closed:  # a hand rarely closes a loop exactly
        extra = int(len(out) * rng.uniform(-0.03, 0.08))
        out = out + out[1 : extra + 1] if extra > 0 else out[: len(out) + extra]
    return out


def _wobble(points: list[Point], amp: float, rng: random.Random) -> list[Point]:
    """Add a smooth low-frequency drift plus a little tremor along the arc length."""
    (f1, f2), (px1, px2, py1, py2) = (rng.uniform(1.0, 4.0) for _ in range(2)), (
        rng.uniform(0, _TAU) for _ in range(4)
    )
    drift, tremor = amp / 2, amp * 0.3
    out, s, (x0, y0) = [], 0.0, points[0]
    for x, y in points:
        s += math.hypot(x - x0, y - y0)
        x0, y0 = x, y
        a1, a2 = _TAU * f1 * s, _TAU * f2 * s
        dx = drift * (math.sin(a1 + px1) + math.sin(a2 + px2)) + tremor * (rng.random() - 0.5)
        dy = drift * (math.sin(a1 + py1) + math.sin(a2 + py2)) + tremor * (rng.random() - 0.5)
        out.append((x + dx, y + dy))
    return out


def draw(name: str, size: int, rng: random.Random) -> Image.Image:
    """Draw one doodle of class ``name``.

    Args:
        name: one of :data:`CLASSES`.
        size: side of the square image in pixels (any size; strokes scale with it).
        rng: the only source of randomness, so the same generator state gives the same pixels.

    Returns:
        A ``size`` x ``size`` Pillow image, mode ``"L"``: black strokes on white, antialiased.

    Raises:
        ValueError: ``name`` is not a doodles class.

    Example:
        >>> draw("star", 32, random.Random(0)).size
        (32, 32)
    """
    shape = _SHAPES.get(name)
    if shape is None:
        raise ValueError(f"unknown doodles class {name!r}; known: {list(CLASSES)}")
    strokes = shape.strokes(rng)

    # place: random aspect and rotation, then fit the bounding box at a random scale and position
    sx, sy = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)
    angle = rng.uniform(-shape.tilt, shape.tilt)
    cos, sin = math.cos(angle), math.sin(angle)
    placed = [([(x * sx * cos - y * sy * sin, x * sx * sin + y * sy * cos) for x, y in pts], closed)
              for pts, closed in strokes]
    xs = [x for pts, _ in placed for x, _ in pts]
    ys = [y for pts, _ in placed for _, y in pts]
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    scale = rng.uniform(0.5, 1 - 2 * _MARGIN) / max(width, height, 1e-6)
    left = rng.uniform(_MARGIN, 1 - _MARGIN - width * scale) - min(xs) * scale
    top = rng.uniform(_MARGIN, 1 - _MARGIN - height * scale) - min(ys) * scale

    # supersample (canvas >= 128 px) and box-reduce: cheap antialiasing at every target size
    factor = max(2, math.ceil(128 / size))
    canvas = size * factor
    pen = max(1, round(size * rng.uniform(0.022, 0.045) * factor))
    amp = rng.uniform(0.004, 0.014)
    img = Image.new("L", (canvas, canvas), 255)
    pen_down = ImageDraw.Draw(img)
    for pts, closed in placed:
        on_canvas = [(left + x * scale, top + y * scale) for x, y in pts]
        path = _wobble(_resample(on_canvas, closed, rng), amp, rng)
        xy = [(x * canvas, y * canvas) for x, y in path]
        pen_down.line(xy, fill=0, width=pen, joint="curve")
        if pen > 2:  # round caps: Pillow's line ends are square
            for cx, cy in (xy[0], xy[-1]):
                pen_down.ellipse((cx - pen / 2, cy - pen / 2, cx + pen / 2, cy + pen / 2), fill=0)
    return img.reduce(factor)


def make_doodle(name: str, index: int, size: int, seed: int) -> Image.Image:
    """Draw image number ``index`` of class ``name``: the same arguments always give the same pixels.

    Its generator is seeded from ``(seed, name, index)`` alone (a string seed is hashed with SHA-512
    by :class:`random.Random`, independent of ``PYTHONHASHSEED``), so it is unaffected by how many
    images or which classes are drawn beside it.
    """
    return draw(name, size, random.Random(f"sitegen-doodles:{seed}:{name}:{index}"))


def make_doodles(
    classes: Sequence[str], images_per_class: int, size: int, seed: int
) -> list[tuple[Image.Image, int]]:
    """Draw ``images_per_class`` doodles of each class, class by class.

    Args:
        classes: class names from :data:`CLASSES`; the label of an image is its class's position here.
        images_per_class: images per class, indices ``0 .. images_per_class - 1``.
        size: image side in pixels.
        seed: dataset seed.

    Returns:
        ``(image, label)`` pairs, mode ``"L"`` images, grouped by class in the given order.

    Example:
        >>> pairs = make_doodles(["circle", "house"], 2, 32, seed=0)
        >>> [label for _, label in pairs]
        [0, 0, 1, 1]
    """
    return [
        (make_doodle(name, i, size, seed), label)
        for label, name in enumerate(classes)
        for i in range(images_per_class)
    ]
