"""Store → frozen view models of plain values: one :class:`Page` per HTML file, plus the files they show.

:func:`plan_site` reads the store once (records, npz arrays, actmaps.json) and returns a
:class:`SitePlan`: every page's template and context, and every store file a page references
(probe images, sprites, filter grids, activation maps) with the site path it is copied to. Templates
then only loop and branch; all numbers are formatted here and every URL is a site path that the
``url`` filter makes page-relative.

Site layout (also in docs/INTERNALS.md, "The site layout"):

```
index.html                     networks, comparisons, diffs, datasets; the build closes it
404.html                       GitHub Pages' answer to any missing URL: self-contained (inline
                               style), its script finds the atlas root (templates/404.html)
compare/<dataset>.html         networks of one dataset side by side
img/<dataset>/<idx>.png        probe images (only those a page shows)
<net>/index.html               network page of the LAST atlas checkpoint (stable URLs)
<net>/<layer>/index.html       layer page (units 1-256), page-2.html … for more units
<net>/<layer>/unit-0007.html   unit page; its sprite unit-0007.webp beside it
<net>/filters.png, <net>/actmaps/…
<net>/@<checkpoint>/…          the same tree for every other atlas checkpoint
<net>/evolution/index.html     feature evolution: stability curves (>= 2 checkpoints with store entries)
<net>/evolution/<layer>.html   rank-1 patch + reconstruction of sampled units at every checkpoint
diff/<name>/index.html         a diff of two checkpoints (build.json `diffs`, :mod:`sitegen.diff`)
```
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from sitegen.compare import read_cka
from sitegen.diff import RBO_P, DiffSide, StoreDiff, read_diff, top_bottom, topk_overlap
from sitegen.errors import RenderError, StoreError
from sitegen.render import charts, similarity
from sitegen.render._models import Chip, Figure, Img
from sitegen.render.peers import PeerFinder, panel_cell
from sitegen.render.sections import CheckpointSections, LayerPage, NetworkPage, UnitPage
from sitegen.store import BuildRecord, CheckpointManifest, DatasetRecord, NetworkRecord, Store, codecs
from sitegen.store.manifest import EVOLUTION_UNITS, CheckpointRef, LayerRecord, SpriteLayout, evenly_spaced

UNITS_PER_PAGE = 256  # keeps a layer page well under 2 MB of HTML (VGG-19 fc6 has 4096 units)
ACTMAPS_FORMAT = 1

# Display sizes (CSS px) of probe images; the <img> width/height attributes carry them.
# CSS px of probe images and activation maps; sized for a projector at 1920 px (issue 14)
TINY, THUMB, SAMPLE, FULL, MAP = 48, 56, 64, 200, 128

# How sprite panel names (store) read under a single cell (page).
_PANEL_LABELS = {
    "patches": "patch",
    "deconvnet": "deconvnet",
    "guided": "guided backprop",
    "gradient": "gradient",
}

# Names a network (at the top) or a layer (inside a network) may not take: site files live there.
_RESERVED_TOP = frozenset({"index.html", "assets", "img", "compare", "diff", "classes"})
_RESERVED_NET = frozenset({"index.html", "filters.png", "actmaps", "evolution", "gradcam"})
# Evolution pages are <net>/evolution/<layer>.html beside index.html.
_RESERVED_EVO = frozenset({"index"})

DIFF_UNITS = 4  # most- and least-changed units shown per layer on a diff page


# --- view models ------------------------------------------------------------------------------------


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
    """One tile of a unit sprite, shown by CSS background-size/position (percent: any display size)."""

    panel: str
    size: str
    position: str


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
    """Every page of the site and every store file they reference (site path → store path)."""

    pages: tuple[Page, ...]
    files: Mapping[str, Path]


# --- small helpers ----------------------------------------------------------------------------------


def slug(name: str) -> str:
    """A URL- and file-safe form of a user name (network, dataset, layer, checkpoint)."""
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return s or "x"


def _unique_slugs(names: Sequence[str], reserved: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    taken = set(reserved)
    for name in names:
        base = slug(name)
        s, n = base, 1
        while s.lower() in taken:
            n += 1
            s = f"{base}-{n}"
        taken.add(s.lower())
        out[name] = s
    return out


def _root(path: str) -> str:
    return "../" * path.count("/")


def _count(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    if n >= 10_000:
        return f"{n / 1e3:.1f} k"
    return f"{n:,}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def _seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(round(s), 60)
    return f"{m} min {sec:02d} s"


def _date(iso: str) -> str:
    try:
        d = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    zone = d.strftime(" %Z") if d.tzinfo else ""
    return d.strftime("%Y-%m-%d %H:%M") + zone


def _value(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def _arr(arrays: Mapping[str, np.ndarray], key: str, where: Path) -> np.ndarray:
    try:
        return arrays[key]
    except KeyError:
        raise RenderError(
            f"{where}: no array {key!r}; the store is incomplete, rerun `sitegen build`"
        ) from None


def _shape(shape: Sequence[int]) -> str:
    return "×".join(str(s) for s in shape)


def _sprite_cells(sprite: SpriteLayout, rank: int, n_panels: int | None = None) -> tuple[SpriteCell, ...]:
    """The cells of 0-based ``rank`` in each panel of a sprite (the first ``n_panels`` panels), as CSS
    background-size/position in percent, so a cell scales to any display size."""
    row, col = divmod(rank, sprite.cols)
    n_cols = len(sprite.panels) * sprite.cols
    size_css = f"{n_cols * 100}% {sprite.rows * 100}%"
    y = f"{100 * row / (sprite.rows - 1):.4g}%" if sprite.rows > 1 else "0%"
    return tuple(
        SpriteCell(
            _PANEL_LABELS.get(panel, panel),
            size_css,
            f"{100 * (p * sprite.cols + col) / (n_cols - 1):.4g}% {y}" if n_cols > 1 else f"0% {y}",
        )
        for p, panel in enumerate(sprite.panels[:n_panels])
    )


def _panels_alt(panels: Sequence[str], k: int) -> str:
    """Alt text of a sprite by its panels' names: "top-9 patches and deconvnet reconstructions"."""
    names = {"patches": "patches", "deconvnet": "deconvnet reconstructions", "guided": "guided backprop"}
    return f"top-{k} " + " and ".join(names.get(p, p) for p in panels)


def _tile_hint(sprite: SpriteLayout | None, k: int) -> str:
    """What a layer page's unit tile shows, by the sprite's panel names."""
    if sprite is None:
        return "Each tile: the unit's three top probe images."
    recon = [_PANEL_LABELS.get(p, p) for p in sprite.panels if p != "patches"]
    if "patches" not in sprite.panels:
        return (
            f"Each tile: the unit's top-{k} probe images (left; the whole image is its receptive field) "
            f"and their {' and '.join(recon)} reconstructions (right), rank 1 top-left."
        )
    if not recon:
        return f"Each tile: the unit's top-{k} images' receptive-field patches, rank 1 top-left."
    return (
        f"Each tile: the unit's top-{k} images' receptive-field patches (left) and their "
        f"{' and '.join(recon)} reconstructions (right), rank 1 top-left."
    )


def _is_output(rec: LayerRecord, net: NetworkRecord, n_classes: int) -> bool:
    """Whether unit ``i`` of the layer is class ``i``: ``prob``, or the last linear layer before it
    with one unit per class (fc8 of AlexNet)."""
    if rec.kind == "prob":
        return rec.units == n_classes
    if rec.kind != "linear" or rec.units != n_classes:
        return False
    later = net.layers[[lay.name for lay in net.layers].index(rec.name) + 1 :]
    return all(lay.kind == "prob" for lay in later)


def _signed(x: float, digits: int = 1, unit: str = " pp") -> str:
    """``+2.5 pp``, ``−1.4 pp`` (a real minus sign), ``0.0 pp`` (no sign when it rounds to zero)."""
    if round(x, digits) == 0:
        return f"{0:.{digits}f}{unit}"
    return f"{x:+.{digits}f}{unit}".replace("-", "−")


# --- the planner ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Dataset:
    rec: DatasetRecord
    slug: str
    labels: list[int]
    chips: tuple[Chip, ...]


@dataclass(frozen=True)
class _Checkpoint:
    """One atlas checkpoint of a network, loaded."""

    net: NetworkRecord
    name: str
    base: str  # site folder of its pages: "tiny-alex/" or "tiny-alex/@epoch-1/"
    manifest: CheckpointManifest
    mined: Mapping[str, np.ndarray]
    classes: Mapping[str, np.ndarray]
    layer_slugs: Mapping[str, str]
    dir: Path
    sections: CheckpointSections


def _recon_note(panels: Sequence[str], grayscale: bool) -> str:
    """How the unit page's reconstructions are drawn (issue 14: say what a grey value means)."""
    methods = [_PANEL_LABELS.get(p, p) for p in panels if p != "patches"]
    if not methods:
        return ""
    note = (
        f"{' and '.join(methods).capitalize()}: mid-grey is no contribution; brighter and darker pixels "
        "push the unit up and down, stretched so that the strongest 0.5 % of the signal saturates."
    )
    if grayscale:
        note += " The images are grey, so each reconstruction is shown in grey: the sum over its channels."
    return note


def plan_site(store: Store) -> SitePlan:
    """Read the store and plan every page of the site.

    Args:
        store: a store with a finished build (``build.json``).

    Returns:
        The pages (template + context) and the store files they reference.

    Raises:
        StoreError: a record is missing, unreadable or of another format.
        RenderError: a file or array a page needs is missing.
    """
    return _Planner(store).plan()


class _Planner:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.files: dict[str, Path] = {}
        self.pages: list[Page] = []
        self._imgs: dict[tuple[str, int, int], Img] = {}
        self._layouts: set[tuple[str, str, str, str]] = set()
        self._manifests: dict[tuple[str, str], CheckpointManifest] = {}
        self._mined: dict[tuple[str, str], Mapping[str, np.ndarray]] = {}

    # -- orchestration --
    def plan(self) -> SitePlan:
        build = self.store.read_build()
        datasets = {name: self._dataset(name) for name in build.datasets}
        nets = [self.store.read_network(n) for n in build.networks]
        for n in nets:
            if n.dataset not in datasets:
                raise RenderError(
                    f"network {n.name!r} uses dataset {n.dataset!r}, which build.json does not list"
                )
        self.net_slugs = _unique_slugs([n.name for n in nets], _RESERVED_TOP)
        compares = {ds: [n for n in nets if n.dataset == ds and self._atlas(n)] for ds in datasets}
        compares = {ds: ns for ds, ns in compares.items() if len(ns) >= 2}
        self.chrome = Chrome(
            title=build.title,
            nav=tuple(
                [Link(f"{self.net_slugs[n.name]}/index.html", n.name) for n in nets if self._atlas(n)]
                + [Link(f"compare/{datasets[ds].slug}.html", f"Compare · {ds}") for ds in compares]
            ),
            version=build.sitegen_version,
            spec_hash=build.spec_hash[:12],
            created=_date(build.created),
        )

        # Issue 6: diffs (listed in build.json) and feature evolution (>= 2 checkpoint entries).
        self.nets = {n.name: n for n in nets}
        self._root = self.store.root.resolve()
        self.entries = {n.name: self._store_entries(n) for n in nets}
        self.evo_slugs = {
            n.name: _unique_slugs(self._manifest(n.name, self.entries[n.name][-1].name).layers, _RESERVED_EVO)
            for n in nets
            if len(self.entries[n.name]) >= 2
        }
        diffs: dict[str, StoreDiff] = {}
        for diff_ref in build.diffs:
            if diff_ref.name not in diffs:
                diffs[diff_ref.name] = read_diff(self.store, diff_ref.name)
        self.related = {n.name: self._related(n, diffs) for n in nets}

        last: dict[str, _Checkpoint] = {}
        for net in nets:
            atlas = self._atlas(net)
            for ref in atlas:
                ck = self._checkpoint(net, ref.name, self._base(net, ref.name))
                self._network_pages(ck, datasets[net.dataset], atlas)
                last[net.name] = ck  # atlas checkpoints are in order: the last one wins
        for net in nets:
            if net.name in self.evo_slugs:
                self._evolution_pages(net)
        for ds_name, ns in compares.items():
            self._compare_page(datasets[ds_name], [last[n.name] for n in ns])
        self.datasets = datasets
        self.class_lists = self._class_pages(datasets, [last[n.name] for n in nets if n.name in last])
        diff_links = tuple(self._diff_page(name, d) for name, d in diffs.items())
        self._index_page(build, datasets, nets, compares, diff_links)
        # GitHub Pages answers any missing URL, at any depth, with /404.html (templates/404.html).
        self._page("404.html", "404.html", "Page not found", [], False)
        return SitePlan(pages=tuple(self.pages), files=dict(self.files))

    def _class_pages(self, datasets: Mapping[str, _Dataset], last: Sequence[_Checkpoint]) -> dict[str, str]:
        """Issue 15: one page per class (sitegen.render.classes); dataset -> its class list."""
        from sitegen.render.classes import ClassHooks, plan_class_pages

        hooks = ClassHooks(
            image=self._image,
            sprite_layout=self._sprite_layout,
            sprite_path=lambda ck, layer, u: self.store.sprite_path(ck.net.name, ck.name, layer, u),
            add_file=self.files.__setitem__,
            page=self._page,
        )
        return plan_class_pages(datasets, last, hooks)

    @staticmethod
    def _atlas(net: NetworkRecord) -> list[CheckpointRef]:
        return [c for c in net.checkpoints if c.atlas]

    def _base(self, net: NetworkRecord, checkpoint: str) -> str:
        """Site folder of a checkpoint's pages: the last atlas checkpoint owns the stable URLs."""
        atlas = [c.name for c in self._atlas(net)]
        top = f"{self.net_slugs[net.name]}/"
        if checkpoint == atlas[-1]:
            return top
        return f"{top}@{_unique_slugs(atlas, frozenset())[checkpoint]}/"

    def _page(
        self, path: str, template: str, title: str, crumbs: Sequence[Link], plotly: bool, **context: Any
    ) -> None:
        ctx = {
            "root": _root(path),
            "here": path.rpartition("/")[0] + "/" if "/" in path else "",
            "site": self.chrome,
            "title": title,
            "crumbs": tuple(crumbs),
            "plotly": plotly,
            "path": path,
            **context,
        }
        self.pages.append(Page(path=path, template=template, context=ctx))

    # -- loading --
    def _dataset(self, name: str) -> _Dataset:
        rec = self.store.read_dataset(name)
        path = self.store.dataset_dir(name) / "labels.npy"
        try:
            labels = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise RenderError(f"{path}: missing; the store is incomplete, rerun `sitegen build`") from None
        except (OSError, ValueError) as e:
            raise RenderError(f"{path}: unreadable ({e}); rerun `sitegen build`") from None
        if len(labels) != rec.n_probe:
            raise RenderError(f"{path}: {len(labels)} labels but dataset.json says n_probe={rec.n_probe}")
        from sitegen.render.classes import class_paths  # issue 15: every chip links its class page

        hrefs = class_paths(slug(name), rec.class_names)
        colors = [charts.class_color(i) for i in range(len(hrefs))]
        chips = tuple(Chip(i, *ch) for i, ch in enumerate(zip(rec.class_names, colors, hrefs, strict=True)))
        return _Dataset(rec=rec, slug=slug(name), labels=labels.tolist(), chips=chips)

    def _checkpoint(self, net: NetworkRecord, name: str, base: str) -> _Checkpoint:
        m = self._manifest(net.name, name)
        known = {lay.name for lay in net.layers}
        missing = [lay for lay in m.layers if lay not in known]
        if missing:
            raise RenderError(
                f"{self.store.network_dir(net.name)}/network.json: no layer(s) {missing} "
                f"that {name}/manifest.json lists; rerun `sitegen build`"
            )
        return _Checkpoint(
            net=net,
            name=name,
            base=base,
            manifest=m,
            mined=self._mined_arrays(net.name, name),
            classes=self.store.read_arrays(net.name, name, "classes"),
            layer_slugs=_unique_slugs(m.layers, _RESERVED_NET),
            dir=self.store.checkpoint_dir(net.name, name),
            sections=CheckpointSections(
                self.store, net.name, name, m.techniques, base, self.files.__setitem__
            ),
        )

    def _image(self, ds: _Dataset, index: int, size: int) -> Img:
        key = (ds.rec.name, index, size)
        img = self._imgs.get(key)
        if img is None:
            if not 0 <= index < len(ds.labels):
                raise RenderError(
                    f"{self.store.dataset_dir(ds.rec.name)}: probe image {index} out of range "
                    f"(n_probe={len(ds.labels)}); rerun `sitegen build`"
                )
            src = f"img/{ds.slug}/{index}.png"
            self.files[src] = self.store.image_path(ds.rec.name, index)
            cls = ds.rec.class_names[ds.labels[index]]
            img = Img(src, size, size, f"probe image {index} ({cls})")
            self._imgs[key] = img
        return img

    # -- shared pieces --
    def _picks(
        self,
        ds: _Dataset,
        weighted: np.ndarray,
        exemplars: np.ndarray | None,
    ) -> tuple[tuple[ClassPick, ...], tuple[ClassPick, ...]]:
        """Top-n and bottom-n classes of a weighted histogram (n = 5, fewer for tiny datasets)."""
        top, bottom = top_bottom(weighted)  # the same top/bottom classes as the diff pages compare
        total = float(weighted.sum()) or 1.0

        def pick(c: int) -> ClassPick:
            if exemplars is not None:
                idx = [int(i) for i in exemplars[c] if i >= 0]
            else:
                idx = list(ds.rec.samples[c][:3]) if c < len(ds.rec.samples) else []
            thumbs = tuple(self._image(ds, i, THUMB) for i in idx[:3])
            thumb = self._image(ds, idx[0], TINY) if idx else None
            return ClassPick(ds.chips[c], f"{100 * float(weighted[c]) / total:.1f}%", thumb, thumbs)

        return tuple(pick(c) for c in top), tuple(pick(c) for c in bottom)

    def _bias_rows(self, ck: _Checkpoint, ds: _Dataset) -> tuple[BiasRow, ...]:
        rows = []
        for layer in ck.manifest.layers:
            w = _arr(ck.classes, f"{layer}/weighted", ck.dir / "classes.npz")
            ex = _arr(ck.classes, f"{layer}/exemplars", ck.dir / "classes.npz")
            top, bottom = self._picks(ds, w, ex)
            rows.append(BiasRow(layer, f"{ck.base}{ck.layer_slugs[layer]}/index.html", top, bottom))
        overall = _arr(ck.classes, "overall/weighted", ck.dir / "classes.npz")
        top, bottom = self._picks(ds, overall, None)
        rows.append(BiasRow("Overall", "", top, bottom))
        return tuple(rows)

    def _crumbs(self, ck: _Checkpoint, *more: Link) -> list[Link]:
        text = ck.net.name if ck.base.count("/") == 1 else f"{ck.net.name} @ {ck.name}"
        return [Link("index.html", "Atlas"), Link(f"{ck.base}index.html", text), *more]

    # -- network, layer and unit pages of one checkpoint --
    def _network_pages(self, ck: _Checkpoint, ds: _Dataset, atlas: Sequence[CheckpointRef]) -> None:
        net, m = ck.net, ck.manifest
        layers = {lay.name: lay for lay in net.layers}
        npz = ck.dir / "classes.npz"
        tabs = tuple(
            Link(
                f"{self._base(net, c.name)}index.html",
                c.name,
                current=c.name == ck.name,
                note=_pct(c.accuracy),
            )
            for c in atlas
        )
        rows = []
        for layer in m.layers:
            rec = layers[layer]
            purity = _arr(ck.classes, f"{layer}/purity", npz)
            mean = float(purity.mean()) if purity.size else 0.0
            n_shown = len(m.shown_units.get(layer, []))
            rows.append(
                LayerRow(
                    name=layer,
                    href=f"{ck.base}{ck.layer_slugs[layer]}/index.html",
                    module=rec.module or "(output)",
                    kind=rec.kind,
                    shape=_shape(rec.shape),
                    units=f"{rec.units:,}" if n_shown == rec.units else f"{n_shown:,} of {rec.units:,}",
                    rf=f"{rec.rf_size} px",
                    purity=f"{mean * 100:.0f}%",
                    purity_pct=round(mean * 100, 1),
                )
            )
            self._layer_pages(ck, ds, rec)

        overall = _arr(ck.classes, "overall/weighted", npz)
        counts = sum(
            (_arr(ck.classes, f"{lay}/per_rank", npz).sum(0) for lay in m.layers), np.zeros(len(overall))
        )
        confusion = _arr(ck.classes, "confusion", npz)
        n_cls = len(ds.rec.class_names)
        figures = {
            "overall": Figure(
                "fig-overall",
                charts.class_preference(overall, counts, ds.rec.class_names, layers=len(m.layers)),
                340,
            ),
            "confusion": Figure(
                "fig-confusion",
                charts.confusion_heatmap(confusion, ds.rec.class_names, height=min(900, 260 + 14 * n_cls)),
                min(900, 260 + 14 * n_cls),
            ),
            "per_class": Figure(
                "fig-per-class", charts.per_class_accuracy(confusion, ds.rec.class_names), 300
            ),
        }
        training = None
        if net.training:
            marks = [(c.epoch, c.name) for c in atlas if c.epoch is not None]
            t = net.training
            training = Figure(
                "fig-training",
                charts.training_curves(
                    [e.epoch for e in t],
                    [e.train_acc for e in t],
                    [e.probe_acc for e in t],
                    [e.loss for e in t],
                    marks,
                ),
                340,
            )
        facts = (
            Fact("architecture", net.arch),
            Fact("dataset", net.dataset),
            Fact("checkpoint", ck.name),
            Fact("probe accuracy", _pct(m.accuracy)),
            Fact("parameters", _count(net.params)),
            Fact("input", f"{net.input_size} px"),
            Fact("normalization", net.normalization.kind),
            Fact("top-k", str(m.top_k)),
            Fact("weights", net.weights or ("trained by sitegen" if net.training else "–")),
        )
        # Issue 14: provenance goes to the page's closing "Build" section, not its opening
        pv = m.provenance
        build_facts = (
            Fact("computed", _date(pv.created) + " on " + pv.device),
            Fact("sitegen", pv.sitegen_version),
            Fact("torch", pv.torch_version),
            Fact("seed", str(pv.seed)),
            Fact("checkpoint hash", pv.checkpoint_hash[:12]),
            Fact("probe fingerprint", pv.dataset_fingerprint[:12]),
        )
        timings = self._bars(m.timings)
        title = net.name if ck.base.count("/") == 1 else f"{net.name} @ {ck.name}"
        shown = {lay: set(u) for lay, u in m.shown_units.items()}

        def unit_href(layer: str, unit: int) -> str:
            ok = layer in ck.layer_slugs and unit in shown.get(layer, ())
            return f"{ck.base}{ck.layer_slugs[layer]}/unit-{unit:04d}.html" if ok else ""

        sections = ck.sections.network(
            NetworkPage(
                page_root=_root(f"{ck.base}index.html"),
                image=lambda i, size: self._image(ds, i, size),
                chips=ds.chips,
                class_names=ds.rec.class_names,
                input_size=net.input_size,
                layers=m.layers,
                weighted={lay: _arr(ck.classes, f"{lay}/weighted", npz) for lay in m.layers},
                overall=overall,
                unit_href=unit_href,
            )
        )
        self._page(
            f"{ck.base}index.html",
            "network.html",
            title,
            self._crumbs(ck)[:-1] + [Link("", title)],
            True,
            net=net.name,
            checkpoint=ck.name,
            facts=facts,
            build_facts=build_facts,
            tabs=tabs if len(tabs) > 1 else (),
            related=self.related[net.name],
            layers=tuple(rows),
            layers_note=next(
                (
                    f"Units “{r.units}”: pages for a sample of the layer's units, drawn once at random "
                    "from the build's seed and the layer's name (the same units in every build and "
                    "checkpoint), unless the spec's units: lists them."
                    for r in rows
                    if " of " in r.units
                ),
                "",
            ),
            bias=self._bias_rows(ck, ds),
            figures=figures,
            training=training,
            timings=timings,
            filters=self._filters(ck),
            actmaps=self._actmaps(ck, ds, layers),
            sections=sections,
            dataset=ds.rec.name,
            wide=n_cls > charts.MANY_CLASSES,
        )

    def _bars(self, timings: Mapping[str, float]) -> tuple[Bar, ...]:
        top = max(timings.values(), default=0.0) or 1.0
        return tuple(Bar(k, _seconds(v), round(100 * v / top, 1)) for k, v in timings.items())

    def _filters(self, ck: _Checkpoint) -> Img | None:
        f = ck.manifest.filters
        if f is None:
            return None
        src = f"{ck.base}filters.png"
        self.files[src] = ck.dir / "filters.png"
        scale = max(1, min(8, 720 // max(1, f.cols * f.cell)))  # enlarge small grids, pixel-crisp
        return Img(
            src,
            f.cols * f.cell * scale,
            f.rows * f.cell * scale,
            f"{f.count} filters of {f.layer}, {f.cols} per row",
        )

    def _actmaps(
        self, ck: _Checkpoint, ds: _Dataset, layers: Mapping[str, LayerRecord]
    ) -> tuple[ActImage, ...]:
        if not ck.manifest.activation_maps:
            return ()
        path = ck.dir / "actmaps.json"
        if not path.is_file():
            raise RenderError(f"{path}: missing; the store is incomplete, rerun `sitegen build`")
        try:
            doc = codecs.read_json(path)
        except (OSError, ValueError) as e:
            raise RenderError(f"{path}: unreadable ({e}); rerun `sitegen build`") from None
        if not isinstance(doc, dict) or doc.get("format") != ACTMAPS_FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else None
            raise RenderError(f"{path}: actmaps format {got!r}, this sitegen reads format {ACTMAPS_FORMAT}")
        shown = {lay: set(u) for lay, u in ck.manifest.shown_units.items()}
        out = []
        try:
            for entry in doc["images"]:
                idx, stored = int(entry["index"]), int(entry["label"])
                if not 0 <= idx < len(ds.labels):
                    raise ValueError(f"probe image {idx} out of range (n_probe={len(ds.labels)})")
                # The dataset's labels are the one truth (issue 14: a label of -1, "not given", read
                # as class -1 named every image after the last class); a stored label must agree.
                label = ds.labels[idx]
                if stored not in (-1, label):
                    raise ValueError(f"image {idx} has label {stored}, the dataset says {label}")
                preds = tuple(
                    Bar(
                        ds.rec.class_names[int(c)],
                        f"{float(p) * 100:.1f}%",
                        round(float(p) * 100, 1),
                        ds.chips[int(c)],
                    )
                    for c, p in entry["top5"]
                )
                act_layers = []
                for lay in entry["layers"]:
                    name = str(lay["layer"])
                    rec = layers.get(name)
                    h, w = (rec.shape[1], rec.shape[2]) if rec is not None and len(rec.shape) == 3 else (1, 1)
                    chans = []
                    for ch in lay["channels"]:
                        c = int(ch["channel"])
                        png = PurePosixPath(str(ch["png"]))
                        if png.is_absolute() or ".." in png.parts:
                            raise ValueError(f"png path {str(png)!r} leaves the checkpoint folder")
                        src = f"{ck.base}{png}"
                        self.files[src] = ck.dir / png
                        img = Img(
                            src, MAP, max(1, round(MAP * h / w)), f"{name} channel {c} on probe image {idx}"
                        )
                        slug_ = ck.layer_slugs.get(name)
                        href = (
                            f"{ck.base}{slug_}/unit-{c:04d}.html"
                            if slug_ and c in shown.get(name, ())
                            else ""
                        )
                        chans.append(ActChannel(c, f"{float(ch['norm']):.3g}", img, href))
                    act_layers.append(ActLayer(name, tuple(chans)))
                out.append(
                    ActImage(
                        image=self._image(ds, idx, FULL),
                        index=idx,
                        label=ds.chips[label],
                        correct=bool(entry["top5"]) and int(entry["top5"][0][0]) == label,
                        predictions=preds,
                        layers=tuple(act_layers),
                    )
                )
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise RenderError(f"{path}: malformed ({type(e).__name__}: {e}); rerun `sitegen build`") from None
        return tuple(out)

    def _sprite_layout(self, ck: _Checkpoint, layer: str, units: Sequence[int]) -> SpriteLayout | None:
        return self._checked_layout(self.store, ck.net.name, ck.name, ck.manifest, layer, units)

    def _checked_layout(
        self,
        store: Store,
        network: str,
        checkpoint: str,
        manifest: CheckpointManifest,
        layer: str,
        units: Sequence[int],
    ) -> SpriteLayout | None:
        """A layer's sprite layout, checked once against one of its sprites (None: no sprites)."""
        lay = manifest.sprites.get(layer)
        if lay is None or not units:
            return None
        key = (str(store.root), network, checkpoint, layer)
        if key in self._layouts:
            return lay
        # One file per layer is enough to catch a sprite writer and reader that disagree on the layout.
        path = store.sprite_path(network, checkpoint, layer, units[0])
        if not path.is_file():
            raise RenderError(f"{path}: missing; the store is incomplete, rerun `sitegen build`")
        want = (len(lay.panels) * lay.cols * lay.cell, lay.rows * lay.cell)
        got = codecs.png_size(path)
        if got != want:
            raise RenderError(
                f"{path}: sprite is {got[0]}x{got[1]} px but manifest.json's layout "
                f"({lay.panels}, {lay.cols}x{lay.rows} cells of {lay.cell} px) needs {want[0]}x{want[1]}"
            )
        self._layouts.add(key)
        return lay

    def _layer_pages(self, ck: _Checkpoint, ds: _Dataset, rec: LayerRecord) -> None:
        layer, m = rec.name, ck.manifest
        mz, cz = ck.dir / "mined.npz", ck.dir / "classes.npz"
        units = list(m.shown_units.get(layer, []))
        bad = [u for u in units if not 0 <= u < rec.units]
        if bad:
            raise RenderError(
                f"{ck.dir}/manifest.json: shown units {bad[:5]} of {layer} outside 0..{rec.units - 1}"
            )
        values = _arr(ck.mined, f"{layer}/values", mz)
        images = _arr(ck.mined, f"{layer}/images", mz)
        boxes = _arr(ck.mined, f"{layer}/boxes", mz)
        per_rank = _arr(ck.classes, f"{layer}/per_rank", cz)
        weighted = _arr(ck.classes, f"{layer}/weighted", cz)
        purity = _arr(ck.classes, f"{layer}/purity", cz)
        dominant = _arr(ck.classes, f"{layer}/dominant", cz)
        exemplars = _arr(ck.classes, f"{layer}/exemplars", cz)
        if len(values) != rec.units or len(purity) != rec.units:
            raise RenderError(f"{mz}: {layer} has {len(values)} units, network.json says {rec.units}")
        # Plain lists: indexing numpy scalars thousands of times is the slow part of planning.
        values_l, images_l, boxes_l = values.tolist(), images.tolist(), boxes.tolist()
        purity_l, dominant_l = purity.tolist(), dominant.tolist()
        lslug = ck.layer_slugs[layer]
        folder = f"{ck.base}{lslug}/"
        sprite = self._sprite_layout(ck, layer, units)
        peer = PeerFinder(  # other units named on this layer's unit pages (similar units, issue 15)
            base=ck.base,
            layer_slugs=ck.layer_slugs,
            manifest=m,
            layout=lambda name: self._sprite_layout(ck, name, m.shown_units.get(name, [])),
            image=lambda i, px: self._image(ds, i, px),
            cell=panel_cell(_sprite_cells),
        )
        n_pages = max(1, math.ceil(len(units) / UNITS_PER_PAGE))
        page_paths = [
            f"{folder}index.html" if p == 0 else f"{folder}page-{p + 1}.html" for p in range(n_pages)
        ]

        # Unit pages.
        unit_path = {u: f"{folder}unit-{u:04d}.html" for u in units}
        output = _is_output(rec, ck.net, len(ds.chips))
        tiles = []
        for pos, u in enumerate(units):
            sprite_img = None
            if sprite is not None:
                src = f"{folder}unit-{u:04d}.webp"
                self.files[src] = self.store.sprite_path(ck.net.name, ck.name, layer, u)
                n_cols = len(sprite.panels) * sprite.cols
                sprite_img = Img(
                    src,
                    n_cols * sprite.cell,
                    sprite.rows * sprite.cell,
                    f"unit {u}: " + _panels_alt(sprite.panels, m.top_k),
                )
            entries = self._entries(ck, ds, rec, sprite, values_l[u], images_l[u], boxes_l[u])
            dom = ds.chips[dominant_l[u]]
            if sprite is None:
                thumbs = tuple(self._image(ds, e.image_index, THUMB) for e in entries[:3])
            elif "patches" not in sprite.panels:
                thumbs = tuple(self._image(ds, e.image_index, THUMB) for e in entries)
            else:
                thumbs = ()
            tiles.append(
                UnitTile(
                    unit=u,
                    label=f"{u:04d} · {ds.chips[u].name}" if output and u < len(ds.chips) else f"{u:04d}",
                    href=unit_path[u],
                    sprite=sprite_img,
                    thumbs=thumbs,
                    grid=f"--cols:{len(sprite.panels) * sprite.cols};--rows:{sprite.rows}" if sprite else "",
                    thumb_cols=sprite.cols if sprite else 3,
                    purity=round(purity_l[u], 4),
                    purity_text=f"{purity_l[u] * 100:.0f}%",
                    chip=dom,
                    value=_value(values_l[u][0]) if values_l[u] else "–",
                )
            )
            counts: dict[int, int] = {}
            for e in entries:
                counts[e.chip.index] = counts.get(e.chip.index, 0) + 1
            mix = tuple(
                Bar(ds.chips[c].name, str(n), round(100 * n / len(entries), 1), ds.chips[c])
                for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            prev_u = units[pos - 1] if pos > 0 else None
            next_u = units[pos + 1] if pos + 1 < len(units) else None
            path = unit_path[u]
            # Output units (prob, and the linear layer that feeds it) are classes: name them.
            out_class = ds.chips[u] if output and u < len(ds.chips) else None
            heading = f"Unit {u} · {out_class.name}" if out_class else f"Unit {u}"
            title = f"{ck.net.name} · {layer} · unit {u}" + (f" · {out_class.name}" if out_class else "")
            self._page(
                path,
                "unit.html",
                title,
                self._crumbs(ck, Link(page_paths[pos // UNITS_PER_PAGE], layer), Link("", f"unit {u}")),
                False,
                net=ck.net.name,
                layer=layer,
                unit=u,
                heading=heading,
                out_class=out_class,
                kind=rec.kind,
                entries=entries,
                mix=mix,
                purity=f"{purity_l[u] * 100:.0f}%",
                chip=dom,
                sprite=sprite_img,
                panels=tuple(sprite.panels) if sprite else (),
                prev=Link(unit_path[prev_u], f"unit {prev_u}") if prev_u is not None else None,
                next=Link(unit_path[next_u], f"unit {next_u}") if next_u is not None else None,
                position=f"{pos + 1} of {len(units)}",
                rf=f"{rec.rf_size} px",
                layer_href=page_paths[pos // UNITS_PER_PAGE],
                sections=ck.sections.unit(UnitPage(layer, u, folder, peer, ds.chips)) if ck.sections else (),
                recon_note=_recon_note(sprite.panels if sprite else (), ds.rec.grayscale),
                overlay=sprite is not None and "patches" in sprite.panels and len(sprite.panels) > 1,
            )

        # Layer pages.
        counts_c = per_rank.sum(0)
        top, bottom = self._picks(ds, weighted, exemplars)
        mean = float(purity.mean()) if purity.size else 0.0
        facts = (
            Fact("module", rec.module or "(output)"),
            Fact("kind", rec.kind),
            Fact("output", _shape(rec.shape)),
            Fact("units", f"{rec.units:,}"),
            Fact("shown", f"{len(units):,}" if len(units) == rec.units else f"{len(units):,} (a sample)"),
            Fact("receptive field", f"{rec.rf_size} px, stride {rec.rf_stride}"),
            Fact("mean purity", f"{mean * 100:.0f}%"),
            Fact("top-k", str(m.top_k)),
        )
        sample_note = (
            ""
            if len(units) == rec.units
            else f"{len(units):,} of the layer's {rec.units:,} units have pages: unless the spec's "
            "units: lists them, a random sample drawn once from the build's seed and the layer's "
            "name, so every build and checkpoint shows the same units."
        )
        evo = self.evo_slugs.get(ck.net.name, {}).get(layer)
        evolution = (
            Link(f"{self.net_slugs[ck.net.name]}/evolution/{evo}.html", "Feature evolution") if evo else None
        )
        layer_names = m.layers
        i = layer_names.index(layer)
        sib_prev = layer_names[i - 1] if i > 0 else None
        sib_next = layer_names[i + 1] if i + 1 < len(layer_names) else None
        figures = (
            Figure("fig-preference", charts.class_preference(weighted, counts_c, ds.rec.class_names), 340),
            Figure("fig-ranks", charts.rank_histograms(per_rank, ds.rec.class_names), 360),
        )
        sections = ck.sections.layer(
            LayerPage(layer, weighted, ds.rec.class_names, folder, lambda u: unit_path.get(u, ""))
        )
        for p in range(n_pages):
            chunk = tuple(tiles[p * UNITS_PER_PAGE : (p + 1) * UNITS_PER_PAGE])
            pager = (
                tuple(Link(page_paths[q], str(q + 1), current=q == p) for q in range(n_pages))
                if n_pages > 1
                else ()
            )
            first = chunk[0].unit if chunk else 0
            last = chunk[-1].unit if chunk else 0
            self._page(
                page_paths[p],
                "layer.html",
                f"{ck.net.name} · {layer}",
                self._crumbs(ck, Link("", layer)),
                p == 0,
                net=ck.net.name,
                layer=layer,
                facts=facts,
                figures=figures if p == 0 else (),
                sections=sections if p == 0 else (),
                top=top if p == 0 else (),
                bottom=bottom if p == 0 else (),
                tiles=chunk,
                pager=pager,
                page_note=f"units {first}–{last}, page {p + 1} of {n_pages}" if n_pages > 1 else "",
                sample_note=sample_note,
                tile_hint=_tile_hint(sprite, m.top_k),
                n_units=len(units),
                evolution=evolution,
                prev_layer=Link(f"{ck.base}{ck.layer_slugs[sib_prev]}/index.html", sib_prev)
                if sib_prev
                else None,
                next_layer=Link(f"{ck.base}{ck.layer_slugs[sib_next]}/index.html", sib_next)
                if sib_next
                else None,
            )

    def _entries(
        self,
        ck: _Checkpoint,
        ds: _Dataset,
        rec: LayerRecord,
        sprite: SpriteLayout | None,
        values: list[float],
        images: list[int],
        boxes: list[list[int]],
    ) -> tuple[TopEntry, ...]:
        size = ck.net.input_size
        out = []
        for r, (v, idx, box) in enumerate(zip(values, images, boxes, strict=True)):
            if idx < 0:  # fewer probe images than k: the store pads with -1
                continue
            t, left, b, rt = box
            rf_box = None
            if (t, left, b, rt) != (0, 0, size, size):
                rf_box = Box(
                    f"{100 * t / size:.2f}%",
                    f"{100 * left / size:.2f}%",
                    f"{100 * (b - t) / size:.2f}%",
                    f"{100 * (rt - left) / size:.2f}%",
                )
            cells: tuple[SpriteCell, ...] = ()
            if sprite is not None and r < sprite.cols * sprite.rows:
                # Issue 14: a whole-image "patch" (fc / prob units) repeats the image shown beside it,
                # and a sprite may store no patches panel at all: cells are picked by panel name.
                cells = tuple(
                    c
                    for c, panel in zip(_sprite_cells(sprite, r), sprite.panels, strict=True)
                    if panel != "patches" or rf_box is not None
                )
            out.append(
                TopEntry(
                    rank=r + 1,
                    value=_value(v),
                    image_index=idx,
                    chip=ds.chips[ds.labels[idx]],
                    image=self._image(ds, idx, FULL),
                    box=rf_box,
                    cells=cells,
                    image_first=not any(c.panel == _PANEL_LABELS["patches"] for c in cells),
                )
            )
        return tuple(out)

    # -- compare and index --
    def _compare_page(self, ds: _Dataset, cks: Sequence[_Checkpoint]) -> None:
        cols = []
        for ck in cks:
            net = ck.net
            facts = (
                Fact("architecture", net.arch),
                Fact("checkpoint", ck.name),
                Fact("probe accuracy", _pct(ck.manifest.accuracy)),
                Fact("parameters", _count(net.params)),
                Fact("layers", str(len(ck.manifest.layers))),
            )
            cols.append(CompareColumn(net.name, f"{ck.base}index.html", facts, self._bias_rows(ck, ds)))
        shares = [_arr(c.classes, "overall/weighted", c.dir / "classes.npz") for c in cks]
        n_cls = len(ds.rec.class_names)
        pref = Figure(
            "fig-preference",
            charts.preference_comparison([c.net.name for c in cks], shares, ds.rec.class_names, overall=True),
            360 if n_cls <= charts.MANY_CLASSES else 420,
        )
        acc = Figure(
            "fig-accuracy",
            charts.network_accuracy([c.net.name for c in cks], [c.manifest.accuracy for c in cks]),
            240,
        )
        series = [
            (c.net.name, [e.epoch for e in c.net.training], [e.probe_acc for e in c.net.training])
            for c in cks
            if c.net.training
        ]
        training = Figure("fig-training", charts.training_comparison(series), 260) if series else None
        path = f"compare/{ds.slug}.html"
        title = f"Compare · {ds.rec.name}"
        self._page(
            path,
            "compare.html",
            title,
            [Link("index.html", "Atlas"), Link("", title)],
            True,
            dataset=ds.rec.name,
            columns=tuple(cols),
            accuracy=acc,
            training=training,
            preference=pref,
            cka=similarity.compare_cka(
                read_cka(self.store, ds.rec.name), [f"{c.net.name}@{c.name}" for c in cks]
            ),
        )

    def _index_page(
        self,
        build: BuildRecord,
        datasets: Mapping[str, _Dataset],
        nets: Sequence[NetworkRecord],
        compares: Mapping[str, Sequence[NetworkRecord]],
        diffs: tuple[Link, ...],
    ) -> None:
        cards = []
        for ds in datasets.values():
            r = ds.rec
            per_class = 3 if len(r.class_names) <= 24 else 1  # 160 classes x 3 thumbnails is too much
            picks = tuple(
                ClassPick(
                    ds.chips[c],
                    f"{r.counts[c][0]} / {r.counts[c][1]}" if c < len(r.counts) else "",
                    None,
                    tuple(
                        self._image(ds, i, SAMPLE)
                        for i in (r.samples[c] if c < len(r.samples) else [])[:per_class]
                    ),
                )
                for c in range(len(r.class_names))
            )
            facts = (
                Fact("classes", f"{len(r.class_names):,}"),
                Fact("train images", f"{r.n_train:,}"),
                Fact("probe images", f"{r.n_probe:,}"),
                Fact("image size", f"{r.image_size} px"),
                Fact("source", r.source),
                Fact("fingerprint", r.fingerprint[:12]),
            )
            cards.append(DatasetCard(r.name, facts, picks, self.class_lists.get(r.name, "")))
        net_cards = []
        for net in nets:
            atlas = self._atlas(net)
            slug_ = self.net_slugs[net.name]
            links = tuple(
                Link(f"{self._base(net, c.name)}index.html", c.name, note=_pct(c.accuracy)) for c in atlas
            )
            accs = [(c.name, c.accuracy) for c in net.checkpoints if c.accuracy is not None]
            fig = None
            if accs:
                fig = Figure(
                    f"fig-acc-{slug_}",
                    charts.checkpoint_accuracy([a for a, _ in accs], [b for _, b in accs]),
                    220,
                )
            last_acc = accs[-1][1] if accs else None
            facts = (
                Fact("architecture", net.arch),
                Fact("dataset", net.dataset),
                Fact("parameters", _count(net.params)),
                Fact("input", f"{net.input_size} px"),
                Fact("layers", str(len(net.layers))),
                Fact("probe accuracy", _pct(last_acc)),
            )
            net_cards.append(
                NetworkCard(
                    net.name,
                    f"{slug_}/index.html" if atlas else "",
                    net.arch,
                    facts,
                    fig,
                    tuple(reversed(links)),
                    self.related[net.name],
                )
            )
        total = sum(build.timings.values())
        prov = (
            Fact("spec hash", build.spec_hash),
            Fact("built", _date(build.created)),
            Fact("sitegen", build.sitegen_version),
            Fact("torch", build.torch_version),
            Fact("device", build.device),
            Fact("total time", _seconds(total)),
        )
        comps = tuple(
            Link(f"compare/{datasets[ds].slug}.html", ds, note=" · ".join(n.name for n in ns))
            for ds, ns in compares.items()
        )
        self._page(
            "index.html",
            "index.html",
            build.title,
            [],
            True,
            provenance=prov,
            timings=self._bars(build.timings),
            datasets=tuple(cards),
            networks=tuple(net_cards),
            comparisons=comps,
            diffs=diffs,
        )

    # -- diffs and feature evolution (issue 6) --
    def _manifest(self, network: str, checkpoint: str) -> CheckpointManifest:
        key = (network, checkpoint)
        if key not in self._manifests:
            self._manifests[key] = self.store.read_manifest(network, checkpoint)
        return self._manifests[key]

    def _mined_arrays(self, network: str, checkpoint: str) -> Mapping[str, np.ndarray]:
        key = (network, checkpoint)
        if key not in self._mined:
            self._mined[key] = self.store.read_arrays(network, checkpoint, "mined")
        return self._mined[key]

    def _store_entries(self, net: NetworkRecord) -> list[CheckpointRef]:
        """Checkpoints with a complete store entry (manifest.json), in training order."""
        return [
            c
            for c in net.checkpoints
            if (self.store.checkpoint_dir(net.name, c.name) / "manifest.json").is_file()
        ]

    def _is_local(self, side: DiffSide) -> bool:
        return side.network in self.nets and Path(side.store_root).resolve() == self._root

    def _related(self, net: NetworkRecord, diffs: Mapping[str, StoreDiff]) -> tuple[Link, ...]:
        """Links from a network's pages to its feature evolution and to the diffs of its checkpoints."""
        out = []
        if net.name in self.evo_slugs:
            out.append(
                Link(
                    f"{self.net_slugs[net.name]}/evolution/index.html",
                    "Feature evolution",
                    note=f"{len(self.entries[net.name])} checkpoints",
                )
            )
        for name, d in diffs.items():
            if any(s.network == net.name and self._is_local(s) for s in (d.a, d.b)):
                out.append(Link(f"diff/{name}/index.html", f"Diff {d.a.ref} → {d.b.ref}", note="diff"))
        return tuple(out)

    def _atlas_unit(self, network: str, checkpoint: str, layer: str) -> str:
        """Site folder of a layer's unit pages at ``checkpoint`` ("" when it has no atlas pages here)."""
        net = self.nets.get(network)
        if net is None or not any(c.name == checkpoint and c.atlas for c in net.checkpoints):
            return ""
        slugs = _unique_slugs(self._manifest(network, checkpoint).layers, _RESERVED_NET)
        return f"{self._base(net, checkpoint)}{slugs[layer]}/" if layer in slugs else ""

    def _diff_page(self, name: str, d: StoreDiff) -> Link:
        path = f"diff/{name}/index.html"
        k = d.top_k
        own = self.datasets.get(d.dataset)  # this site's dataset: chips link its class pages
        chips = (
            own.chips
            if own is not None and list(own.rec.class_names) == list(d.class_names)
            else tuple(Chip(i, c, charts.class_color(i)) for i, c in enumerate(d.class_names))
        )
        sides = (self._diff_side("a", d.a), self._diff_side("b", d.b))
        # One network: its checkpoints name the sides; across networks, the full refs do.
        labels = [s.side.checkpoint if d.a.network == d.b.network else s.side.ref for s in sides]
        layer_slugs = _unique_slugs([lay.name for lay in d.layers], frozenset())
        n_cls = len(d.class_names)
        sections, prefs = [], []
        for i, lay in enumerate(d.layers):
            cos = lay.mean_cosine
            row = DiffLayerRow(
                name=lay.name,
                anchor=f"layer-{i}",
                units=f"{lay.units:,}",
                overlap=f"{lay.mean_overlap:.2f} / {k}",
                overlap_pct=round(100 * lay.mean_overlap / max(k, 1), 1),
                rbo=f"{lay.mean_rbo:.3f}",
                l1=f"{lay.l1:.3f}",
                js=f"{lay.js:.3f}",
                purity=_signed(100 * lay.mean_purity_change),
                dominant=f"{lay.dominant_changed * 100:.0f}%",
                cosine="–" if cos is None else f"{cos:.3f}",
                match_r=("–" if d.images else "") if lay.mean_match_r is None else f"{lay.mean_match_r:.2f}",
                identity="" if lay.identity is None else f"{100 * lay.identity:.0f}%",
                top=ClassShift(
                    tuple(chips[c] for c in lay.entered_top), tuple(chips[c] for c in lay.left_top)
                ),
                bottom=ClassShift(
                    tuple(chips[c] for c in lay.entered_bottom), tuple(chips[c] for c in lay.left_bottom)
                ),
            )
            prefs.append(
                Figure(
                    f"fig-diff-pref-{i}",
                    charts.preference_comparison(labels, [lay.weighted_a, lay.weighted_b], d.class_names),
                    360 if n_cls <= charts.MANY_CLASSES else 420,
                )
            )
            most, least, note = self._changed_units(name, d, i, sides, layer_slugs[lay.name], chips)
            sections.append(DiffSection(row, most, least, note, lay.cosine is not None))

        matching = similarity.diff_matching(d)  # issue 15: units matched by index or by correlation
        overview = Figure(
            "fig-diff-overlap",
            charts.diff_overlap(
                [lay.name for lay in d.layers],
                [lay.mean_overlap for lay in d.layers],
                [lay.mean_rbo for lay in d.layers],
                k,
                rbo_p=RBO_P,
            ),
            300,
        )
        facts = (
            Fact("dataset", d.dataset),
            Fact("probe fingerprint", d.fingerprint[:12]),
            Fact("top-k", str(k)),
            Fact(f"accuracy {labels[0]}", _pct(d.accuracy_a)),
            Fact(f"accuracy {labels[1]}", _pct(d.accuracy_b)),
            Fact("accuracy change", _signed(100 * d.accuracy_change)),
            Fact("mean overlap", f"{d.mean_overlap:.2f} of {k}"),
            Fact("filter weights", "compared (cosine)" if d.has_weights else similarity.no_cosine(d)),
            Fact(matching.label, matching.value),
        )
        side_links = tuple(
            Link(f"{s.base}index.html" if s.base else "", s.side.ref, note=s.note) for s in sides
        )
        title = f"Diff · {d.a.ref} → {d.b.ref}"
        self._page(
            path,
            "diff.html",
            title,
            [Link("index.html", "Atlas"), Link("", title)],
            True,
            a=d.a.ref,
            b=d.b.ref,
            labels=tuple(labels),
            sides=side_links,
            facts=facts,
            k=k,
            has_cosine=d.has_weights,
            rbo_p=f"{RBO_P:g}",
            layers=tuple(sections),
            overview=overview,
            preferences=tuple(prefs),
            matching=matching,
            cka=similarity.diff_cka(d, labels),
        )
        return Link(
            path,
            f"{d.a.ref} → {d.b.ref}",
            note=f"mean overlap {d.mean_overlap:.1f} of {k} · accuracy {_signed(100 * d.accuracy_change)}",
        )

    def _diff_side(self, key: str, side: DiffSide) -> _DiffSide:
        local = self._is_local(side)
        store = self.store if local else Store(side.store_root)
        note, manifest = "", None
        if local:
            manifest = self._manifest(side.network, side.checkpoint)
        else:
            note = f"store {side.store_root}"
            try:
                manifest = store.read_manifest(side.network, side.checkpoint)
            except StoreError:
                # The diff's numbers are in this store; only the other store's sprites are lost.
                note = f"store {side.store_root} is gone: no sprites"
        base = ""
        if local and any(c.name == side.checkpoint and c.atlas for c in self.nets[side.network].checkpoints):
            base = self._base(self.nets[side.network], side.checkpoint)
        return _DiffSide(key, side, store, manifest, base, note)

    def _changed_units(
        self,
        name: str,
        d: StoreDiff,
        index: int,
        sides: Sequence[_DiffSide],
        lslug: str,
        chips: Sequence[Chip],
    ) -> tuple[tuple[UnitChange, ...], tuple[UnitChange, ...], str]:
        """The most- and least-changed units of a layer (by overlap, ties by rank-biased overlap) among the
        units with pages (sprites) in both checkpoints."""
        lay = d.layers[index]
        shown = [set(s.manifest.shown_units.get(lay.name, [])) for s in sides if s.manifest is not None]
        if lay.match is not None and len(shown) == 2:  # units matched by correlation: B's partner of u
            shown[1] = {u for u in range(lay.units) if lay.b_unit(u) in shown[1]}
        pool = set.intersection(*shown) if shown else set(range(lay.units))
        cand = sorted(u for u in pool if 0 <= u < lay.units)
        if not cand:
            return (), (), "No unit of this layer has pages in both checkpoints."
        ov, rho = lay.overlap.tolist(), lay.rbo.tolist()
        n = min(DIFF_UNITS, (len(cand) + 1) // 2)
        most = sorted(cand, key=lambda u: (ov[u], rho[u], u))[:n]
        least = [u for u in sorted(cand, key=lambda u: (-ov[u], -rho[u], u)) if u not in most][:n]
        pa, pb = lay.purity_a.tolist(), lay.purity_b.tolist()
        da, db = lay.dominant_a.tolist(), lay.dominant_b.tolist()
        cos = lay.cosine.tolist() if lay.cosine is not None else None

        def change(u: int) -> UnitChange:
            c = cos[u] if cos is not None else math.nan
            return UnitChange(
                unit=u,
                overlap=f"{ov[u]} of {d.top_k}",
                overlap_pct=round(100 * ov[u] / max(d.top_k, 1), 1),
                rbo=f"{rho[u]:.3f}",
                purity=f"{pa[u] * 100:.0f} → {pb[u] * 100:.0f}%",
                dominant_a=chips[da[u]],
                dominant_b=chips[db[u]],
                dominant_changed=da[u] != db[u],
                cosine="–" if math.isnan(c) else f"{c:.3f}",
                a=self._diff_sprite(name, sides[0], lay.name, lslug, u, d.top_k),
                b=self._diff_sprite(name, sides[1], lay.name, lslug, lay.b_unit(u), d.top_k),
                unit_b=lay.b_unit(u),
                match_r="" if lay.match_r is None or math.isnan(lay.match_r[u]) else f"{lay.match_r[u]:.2f}",
            )

        return tuple(change(u) for u in most), tuple(change(u) for u in least), ""

    def _diff_sprite(
        self, name: str, sd: _DiffSide, layer: str, lslug: str, unit: int, k: int
    ) -> SpriteView | None:
        m = sd.manifest
        units = m.shown_units.get(layer, []) if m is not None else []
        if m is None or unit not in units:
            return None
        net, ck = sd.side.network, sd.side.checkpoint
        lay = self._checked_layout(sd.store, net, ck, m, layer, units)
        if lay is None:
            return None
        # A checkpoint with atlas pages here: its sprite is already in the site, beside its unit page.
        folder = self._atlas_unit(net, ck, layer) if sd.base else ""
        href = f"{folder}unit-{unit:04d}.html" if folder else ""
        folder = folder or f"diff/{name}/{sd.key}/{lslug}/"
        src = f"{folder}unit-{unit:04d}.webp"
        self.files[src] = sd.store.sprite_path(net, ck, layer, unit)
        n_cols = len(lay.panels) * lay.cols
        img = Img(src, n_cols * lay.cell, lay.rows * lay.cell, f"{sd.side.ref} {layer} unit {unit}: top-{k}")
        return SpriteView(img, f"--cols:{n_cols};--rows:{lay.rows}", href)

    def _evolution_pages(self, net: NetworkRecord) -> None:
        """Feature evolution (Zeiler & Fergus 2013, Fig. 4): sampled units' rank-1 patch and
        reconstruction at every checkpoint with a store entry, and per-layer stability curves."""
        entries = self.entries[net.name]
        final = entries[-1]
        mf = self._manifest(net.name, final.name)
        k = mf.top_k
        slugs = self.evo_slugs[net.name]
        net_slug = self.net_slugs[net.name]
        folder = f"{net_slug}/evolution/"
        ck_slugs = _unique_slugs([c.name for c in entries], frozenset())
        manifests = [self._manifest(net.name, c.name) for c in entries]
        numeric = all(c.epoch is not None for c in entries)

        # Top-k overlap of every unit with the final checkpoint (diff.topk_overlap), per layer and checkpoint.
        overlaps: dict[str, list[np.ndarray | None]] = {}
        final_path = self.store.checkpoint_dir(net.name, final.name) / "mined.npz"
        for layer in mf.layers:
            ref = _arr(self._mined_arrays(net.name, final.name), f"{layer}/images", final_path)
            per: list[np.ndarray | None] = []
            for c, m in zip(entries, manifests, strict=True):
                imgs = self._mined_arrays(net.name, c.name).get(f"{layer}/images")
                ok = imgs is not None and layer in m.layers and imgs.shape == ref.shape
                per.append(topk_overlap(imgs, ref) if imgs is not None and ok else None)
            overlaps[layer] = per
        means = {
            layer: [float(o.mean()) if o is not None and o.size else None for o in per]
            for layer, per in overlaps.items()
        }

        columns = tuple(
            EvoColumn(
                c.name,
                f"epoch {c.epoch}" if c.epoch is not None else "",
                _pct(c.accuracy),
                f"{self._base(net, c.name)}index.html" if c.atlas else "",
            )
            for c in entries
        )
        crumbs = [Link("index.html", "Atlas")]
        if self._atlas(net):
            crumbs.append(Link(f"{net_slug}/index.html", net.name))
        index = f"{folder}index.html"
        table = tuple(
            EvoLayerRow(
                layer,
                f"{folder}{slugs[layer]}.html",
                tuple("–" if v is None else f"{v:.2f}" for v in means[layer]),
                tuple(0.0 if v is None else round(100 * v / max(k, 1), 1) for v in means[layer]),
            )
            for layer in mf.layers
        )
        figure = Figure(
            "fig-stability",
            charts.stability_curves(
                list(mf.layers),
                [c.epoch if numeric and c.epoch is not None else c.name for c in entries],
                [means[layer] for layer in mf.layers],
                k,
                numeric=numeric,
            ),
            360,
        )
        common = {"net": net.name, "columns": columns, "k": k, "final": final.name}
        self._page(
            index,
            "evolution.html",
            f"{net.name} · feature evolution",
            [*crumbs, Link("", "Feature evolution")],
            True,
            layer="",
            figure=figure,
            table=table,
            rows=(),
            means=(),
            siblings=(),
            **common,
        )

        for layer in mf.layers:
            units = evenly_spaced(mf.shown_units.get(layer, []), EVOLUTION_UNITS)  # as build samples
            rows = []
            for u in units:
                cells = tuple(
                    self._evo_cell(
                        net,
                        c,
                        m,
                        layer,
                        u,
                        overlaps[layer][j],
                        k,
                        j == len(entries) - 1,
                        f"{folder}sprites/{ck_slugs[c.name]}/{slugs[layer]}/",
                    )
                    for j, (c, m) in enumerate(zip(entries, manifests, strict=True))
                )
                href = next((cell.href for cell in reversed(cells) if cell is not None and cell.href), "")
                rows.append(EvoRow(u, f"{u:04d}", href, cells))
            self._page(
                f"{folder}{slugs[layer]}.html",
                "evolution.html",
                f"{net.name} · {layer} · feature evolution",
                [*crumbs, Link(index, "Feature evolution"), Link("", layer)],
                False,
                layer=layer,
                figure=None,
                table=(),
                rows=tuple(rows),
                means=tuple("–" if v is None else f"{v:.1f}" for v in means[layer]),
                siblings=tuple(
                    Link(f"{folder}{slugs[other]}.html", other, current=other == layer) for other in mf.layers
                ),
                **common,
            )

    def _evo_cell(
        self,
        net: NetworkRecord,
        ck: CheckpointRef,
        m: CheckpointManifest,
        layer: str,
        unit: int,
        overlap: np.ndarray | None,
        k: int,
        final: bool,
        folder: str,
    ) -> EvoCell | None:
        units = m.shown_units.get(layer, [])
        if unit not in units:
            return None
        lay = self._checked_layout(self.store, net.name, ck.name, m, layer, units)
        if lay is None:
            return None
        atlas = self._atlas_unit(net.name, ck.name, layer)
        src = f"{atlas or folder}unit-{unit:04d}.webp"
        self.files[src] = self.store.sprite_path(net.name, ck.name, layer, unit)
        note = "final" if final else ("–" if overlap is None else f"{int(overlap[unit])}/{k}")
        title = f"{ck.name}: unit {unit}, rank-1 " + " and ".join(
            _PANEL_LABELS.get(p, p) for p in lay.panels[:2]
        )
        if not final and overlap is not None:
            title += f"; {note} of its top-{k} images are in the final top-{k}"
        return EvoCell(
            src,
            _sprite_cells(lay, 0, 2),
            note,
            f"{atlas}unit-{unit:04d}.html" if atlas else "",
            title,
        )


@dataclass(frozen=True)
class _DiffSide:
    """One side of a diff as the site sees it: its store, manifest (None: unreadable foreign store),
    atlas folder in this site ("" when it has none) and a note for the page."""

    key: str
    side: DiffSide
    store: Store
    manifest: CheckpointManifest | None
    base: str
    note: str
