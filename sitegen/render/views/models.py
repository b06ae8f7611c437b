"""The view models: frozen dataclasses of plain, formatted values that the page templates show.

Every page context is built from these (and :mod:`sitegen.render._models`' Img, Chip, Figure); a
template only loops and branches over them. The display sizes (CSS px) of probe images and
activation maps live here too: an :class:`~sitegen.render._models.Img` carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sitegen.render._models import Chip, Figure, Img

# Display sizes (CSS px) of probe images; the <img> width/height attributes carry them.
# CSS px of probe images and activation maps; sized for a projector at 1920 px (issue 14)
TINY, THUMB, SAMPLE, FULL, MAP = 48, 56, 64, 200, 128


@dataclass(frozen=True, slots=True)
class Link:
    """A link; ``href`` is a site path ("" for the current page in breadcrumbs)."""

    href: str
    text: str
    current: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class Fact:
    """A label/value row of a card."""

    label: str
    value: str


@dataclass(frozen=True, slots=True)
class Bar:
    """A labelled horizontal bar (timings, probabilities): ``pct`` in 0..100."""

    label: str
    value: str
    pct: float
    chip: Chip | None = None


@dataclass(frozen=True, slots=True)
class ClassPick:
    """A class in a top/bottom list: its chip, share of the layer's weighted score, exemplar images."""

    chip: Chip
    score: str
    thumb: Img | None
    exemplars: tuple[Img, ...]


@dataclass(frozen=True, slots=True)
class BiasRow:
    """A row of the layer-bias table / summary grid: a layer (or "Overall") and its top/bottom classes."""

    label: str
    href: str
    top: tuple[ClassPick, ...]
    bottom: tuple[ClassPick, ...]


@dataclass(frozen=True, slots=True)
class LayerRow:
    """A row of the network page's layer table."""

    name: str
    href: str
    module: str
    kind: str
    shape: str
    units: str
    rf: str
    purity: str
    purity_pct: float


@dataclass(frozen=True, slots=True)
class UnitTile:
    """A unit on its layer page; ``purity`` (0..1) and ``klass`` feed the sort/filter script."""

    unit: int
    label: str
    href: str
    sprite: Img | None
    grid: str  # "--cols:6;--rows:3": the sprite's cell grid, drawn as thin lines over it
    thumbs: tuple[Img, ...]  # probe images: no sprite (3), or a sprite without patches (all top-k)
    thumb_cols: int
    purity: float
    purity_text: str
    chip: Chip
    value: str


@dataclass(frozen=True, slots=True)
class SpriteCell:
    """One tile of a unit sprite, shown by CSS background-size/position (percent: any display size).
    ``index``: its panel's place in the sprite (0: the first panel)."""

    panel: str
    size: str
    position: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class Box:
    """An RF box over a displayed image, in percent of its side."""

    top: str
    left: str
    height: str
    width: str


@dataclass(frozen=True, slots=True)
class TopEntry:
    """One of a unit's top-k images: rank, activation, class, patch cells, full image with RF box."""

    rank: int
    value: str
    image_index: int
    chip: Chip
    image: Img
    box: Box | None
    cells: tuple[SpriteCell, ...]
    image_first: bool  # no patch cell: the whole image stands in the patch's place (issue 14)


@dataclass(frozen=True, slots=True)
class ActChannel:
    """One activation map: channel, its norm, the map image, the unit page ("" when not shown)."""

    channel: int
    norm: str
    img: Img
    href: str


@dataclass(frozen=True, slots=True)
class ActLayer:
    layer: str
    channels: tuple[ActChannel, ...]


@dataclass(frozen=True, slots=True)
class ActImage:
    """A probe image with its true class, top-5 predictions and the top channels per layer."""

    image: Img
    index: int
    label: Chip
    correct: bool
    predictions: tuple[Bar, ...]
    layers: tuple[ActLayer, ...]


@dataclass(frozen=True, slots=True)
class DatasetCard:
    name: str
    facts: tuple[Fact, ...]
    classes: tuple[ClassPick, ...]
    classes_href: str = ""  # its class list (issue 15)


@dataclass(frozen=True, slots=True)
class NetworkCard:
    name: str
    href: str
    arch: str
    facts: tuple[Fact, ...]
    figure: Figure | None
    checkpoints: tuple[Link, ...]
    related: tuple[Link, ...] = ()


@dataclass(frozen=True, slots=True)
class CompareColumn:
    name: str
    href: str
    facts: tuple[Fact, ...]
    bias: tuple[BiasRow, ...]


@dataclass(frozen=True, slots=True)
class ClassShift:
    """Classes that entered / left a layer's top (or bottom) list from checkpoint A to B."""

    entered: tuple[Chip, ...]
    left: tuple[Chip, ...]


@dataclass(frozen=True, slots=True)
class DiffLayerRow:
    """A row of a diff page's layer table; every value formatted."""

    name: str
    anchor: str
    units: str
    overlap: str
    overlap_pct: float
    rbo: str
    l1: str
    js: str
    purity: str
    dominant: str
    cosine: str
    top: ClassShift
    bottom: ClassShift
    match_r: str = ""  # mean Pearson r of the compared unit pairs (issue 15; "" without activations)
    identity: str = ""  # one run: share of units a correlation matching pairs with themselves


@dataclass(frozen=True, slots=True)
class SpriteView:
    """A whole unit sprite (patches, reconstructions) with its cell grid and unit page ("" if none)."""

    img: Img
    grid: str
    href: str


@dataclass(frozen=True, slots=True)
class UnitChange:
    """A unit on a diff page: how it changed, and its sprite in A and in B (None: no sprite there)."""

    unit: int
    overlap: str
    overlap_pct: float
    rbo: str
    purity: str
    dominant_a: Chip
    dominant_b: Chip
    dominant_changed: bool
    cosine: str
    a: SpriteView | None
    b: SpriteView | None
    unit_b: int = -1  # B's unit compared with ``unit`` (itself, or its match by correlation)
    match_r: str = ""  # Pearson r of the pair ("" without per-image activations)


@dataclass(frozen=True, slots=True)
class DiffSection:
    """One layer of a diff page: its summary row and its most- and least-changed units."""

    row: DiffLayerRow
    most: tuple[UnitChange, ...]
    least: tuple[UnitChange, ...]
    note: str
    has_cosine: bool


@dataclass(frozen=True, slots=True)
class EvoColumn:
    """A checkpoint column of the feature-evolution pages."""

    name: str
    note: str
    accuracy: str
    href: str


@dataclass(frozen=True, slots=True)
class EvoCell:
    """A unit's rank-1 patch and reconstruction at one checkpoint, cut from that checkpoint's sprite."""

    src: str
    cells: tuple[SpriteCell, ...]
    overlap: str
    href: str
    title: str


@dataclass(frozen=True, slots=True)
class EvoRow:
    """A unit across checkpoints (None: the unit has no sprite at that checkpoint)."""

    unit: int
    label: str
    href: str
    cells: tuple[EvoCell | None, ...]


@dataclass(frozen=True, slots=True)
class EvoLayerRow:
    """A layer in the stability table: mean top-k overlap with the final checkpoint per checkpoint."""

    name: str
    href: str
    values: tuple[str, ...]
    pcts: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Chrome:
    """What every page shows around its content: site title, navigation, footer provenance."""

    title: str
    nav: tuple[Link, ...]
    version: str
    spec_hash: str
    created: str


@dataclass(frozen=True, slots=True)
class Page:
    """One HTML file to write: its site path, template and context of plain values."""

    path: str
    template: str
    context: dict[str, Any]


@dataclass(frozen=True)
class SitePlan:
    """Every page of the site and every store file they reference (site path → store path).

    ``classes``: the most classes of any of its datasets; the site stylesheet paints that many
    (:func:`sitegen.render._models.class_css`)."""

    pages: tuple[Page, ...]
    files: Mapping[str, Path]
    classes: int = 0
