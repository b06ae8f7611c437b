"""Store → frozen view models of plain values: one :class:`Page` per HTML file, plus the files they show.

:func:`plan_site` reads the store once (records, npz arrays, actmaps.json) and returns a
:class:`SitePlan`: every page's template and context, and every store file a page references
(probe images, sprites, filter grids, activation maps) with the site path it is copied to. Templates
then only loop and branch; all numbers are formatted here and every URL is a site path that the
``url`` filter makes page-relative.

Site layout (also in docs/INTERNALS.md, "The site layout"):

```
index.html                     build, datasets, networks, comparisons
compare/<dataset>.html         networks of one dataset side by side
img/<dataset>/<idx>.png        probe images (only those a page shows)
<net>/index.html               network page of the LAST atlas checkpoint (stable URLs)
<net>/<layer>/index.html       layer page (units 1-256), page-2.html … for more units
<net>/<layer>/unit-0007.html   unit page; its sprite unit-0007.webp beside it
<net>/filters.png, <net>/actmaps/…
<net>/@<checkpoint>/…          the same tree for every other atlas checkpoint
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

from sitegen.errors import RenderError
from sitegen.render import charts
from sitegen.store import BuildRecord, CheckpointManifest, DatasetRecord, NetworkRecord, Store, codecs
from sitegen.store.manifest import CheckpointRef, LayerRecord, SpriteLayout

UNITS_PER_PAGE = 256  # keeps a layer page well under 2 MB of HTML (VGG-19 fc6 has 4096 units)
ACTMAPS_FORMAT = 1

# Display sizes (CSS px) of probe images; the <img> width/height attributes carry them.
TINY, THUMB, SAMPLE, FULL, MAP = 28, 44, 56, 132, 84

# How sprite panel names (store) read under a single cell (page).
_PANEL_LABELS = {
    "patches": "patch",
    "deconvnet": "deconvnet",
    "guided": "guided backprop",
    "gradient": "gradient",
}

# Names a network (at the top) or a layer (inside a network) may not take: site files live there.
_RESERVED_TOP = frozenset({"index.html", "assets", "img", "compare", "diff"})
_RESERVED_NET = frozenset({"index.html", "filters.png", "actmaps"})


# --- view models ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """A link; ``href`` is a site path ("" for the current page in breadcrumbs)."""

    href: str
    text: str
    current: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class Img:
    """An image file of the site, with its display size in CSS px."""

    src: str
    width: int
    height: int
    alt: str


@dataclass(frozen=True, slots=True)
class Chip:
    """A class name with its colour (:func:`sitegen.render.charts.class_color`)."""

    index: int
    name: str
    color: str


@dataclass(frozen=True, slots=True)
class Fact:
    """A label/value row of a card."""

    label: str
    value: str


@dataclass(frozen=True, slots=True)
class Figure:
    """A Plotly figure: a stable DOM id, its JSON spec and its height in px."""

    id: str
    spec: dict[str, Any]
    height: int


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
    thumbs: tuple[Img, ...]
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


@dataclass(frozen=True, slots=True)
class NetworkCard:
    name: str
    href: str
    arch: str
    facts: tuple[Fact, ...]
    figure: Figure | None
    checkpoints: tuple[Link, ...]


@dataclass(frozen=True, slots=True)
class CompareColumn:
    name: str
    href: str
    facts: tuple[Fact, ...]
    bias: tuple[BiasRow, ...]


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

        last: dict[str, _Checkpoint] = {}
        for net in nets:
            atlas = self._atlas(net)
            for ref in atlas:
                ck = self._checkpoint(net, ref.name, self._base(net, ref.name))
                self._network_pages(ck, datasets[net.dataset], atlas)
                last[net.name] = ck  # atlas checkpoints are in order: the last one wins
        for ds_name, ns in compares.items():
            self._compare_page(datasets[ds_name], [last[n.name] for n in ns])
        self._index_page(build, datasets, nets, compares)
        return SitePlan(pages=tuple(self.pages), files=dict(self.files))

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
        chips = tuple(Chip(i, c, charts.class_color(i)) for i, c in enumerate(rec.class_names))
        return _Dataset(rec=rec, slug=slug(name), labels=labels.tolist(), chips=chips)

    def _checkpoint(self, net: NetworkRecord, name: str, base: str) -> _Checkpoint:
        m = self.store.read_manifest(net.name, name)
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
            mined=self.store.read_arrays(net.name, name, "mined"),
            classes=self.store.read_arrays(net.name, name, "classes"),
            layer_slugs=_unique_slugs(m.layers, _RESERVED_NET),
            dir=self.store.checkpoint_dir(net.name, name),
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
        n_cls = len(weighted)
        n = max(1, min(5, n_cls // 2))
        order = np.argsort(-weighted, kind="stable").tolist()
        total = float(weighted.sum()) or 1.0

        def pick(c: int) -> ClassPick:
            if exemplars is not None:
                idx = [int(i) for i in exemplars[c] if i >= 0]
            else:
                idx = list(ds.rec.samples[c][:3]) if c < len(ds.rec.samples) else []
            thumbs = tuple(self._image(ds, i, THUMB) for i in idx[:3])
            thumb = self._image(ds, idx[0], TINY) if idx else None
            return ClassPick(ds.chips[c], f"{100 * float(weighted[c]) / total:.1f}%", thumb, thumbs)

        return tuple(pick(c) for c in order[:n]), tuple(pick(c) for c in reversed(order[-n:]))

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
            shown = len(m.shown_units.get(layer, []))
            rows.append(
                LayerRow(
                    name=layer,
                    href=f"{ck.base}{ck.layer_slugs[layer]}/index.html",
                    module=rec.module or "(output)",
                    kind=rec.kind,
                    shape=_shape(rec.shape),
                    units=f"{rec.units:,}" if shown == rec.units else f"{shown:,} of {rec.units:,}",
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
                "fig-overall", charts.class_preference(overall, counts, ds.rec.class_names), 340
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
                260,
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
            Fact("computed", _date(m.provenance.created) + " on " + m.provenance.device),
        )
        timings = self._bars(m.timings)
        title = net.name if ck.base.count("/") == 1 else f"{net.name} @ {ck.name}"
        self._page(
            f"{ck.base}index.html",
            "network.html",
            title,
            self._crumbs(ck)[:-1] + [Link("", title)],
            True,
            net=net.name,
            checkpoint=ck.name,
            facts=facts,
            tabs=tabs if len(tabs) > 1 else (),
            layers=tuple(rows),
            bias=self._bias_rows(ck, ds),
            figures=figures,
            training=training,
            timings=timings,
            filters=self._filters(ck),
            actmaps=self._actmaps(ck, ds, layers),
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
        scale = max(1, min(4, 480 // max(1, f.cols * f.cell)))  # enlarge small grids, pixel-crisp
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
                idx, label = int(entry["index"]), int(entry["label"])
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
        lay = ck.manifest.sprites.get(layer)
        if lay is None or not units:
            return None
        # One file per layer is enough to catch a sprite writer and reader that disagree on the layout.
        path = self.store.sprite_path(ck.net.name, ck.name, layer, units[0])
        if not path.is_file():
            raise RenderError(f"{path}: missing; the store is incomplete, rerun `sitegen build`")
        want = (len(lay.panels) * lay.cols * lay.cell, lay.rows * lay.cell)
        got = codecs.png_size(path)
        if got != want:
            raise RenderError(
                f"{path}: sprite is {got[0]}x{got[1]} px but manifest.json's layout "
                f"({lay.panels}, {lay.cols}x{lay.rows} cells of {lay.cell} px) needs {want[0]}x{want[1]}"
            )
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
        n_pages = max(1, math.ceil(len(units) / UNITS_PER_PAGE))
        page_paths = [
            f"{folder}index.html" if p == 0 else f"{folder}page-{p + 1}.html" for p in range(n_pages)
        ]

        # Unit pages.
        unit_path = {u: f"{folder}unit-{u:04d}.html" for u in units}
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
                    f"unit {u}: top-{m.top_k} patches"
                    + (" and reconstructions" if n_cols > sprite.cols else ""),
                )
            entries = self._entries(ck, ds, rec, sprite, values_l[u], images_l[u], boxes_l[u])
            dom = ds.chips[dominant_l[u]]
            thumbs = (
                tuple(self._image(ds, e.image_index, THUMB) for e in entries[:3]) if sprite is None else ()
            )
            tiles.append(
                UnitTile(
                    unit=u,
                    label=f"{u:04d}",
                    href=unit_path[u],
                    sprite=sprite_img,
                    thumbs=thumbs,
                    grid=f"--cols:{len(sprite.panels) * sprite.cols};--rows:{sprite.rows}" if sprite else "",
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
            title = f"{ck.net.name} · {layer} · unit {u}"
            self._page(
                path,
                "unit.html",
                title,
                self._crumbs(ck, Link(page_paths[pos // UNITS_PER_PAGE], layer), Link("", f"unit {u}")),
                False,
                net=ck.net.name,
                layer=layer,
                unit=u,
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
            Fact("shown", f"{len(units):,}"),
            Fact("receptive field", f"{rec.rf_size} px, stride {rec.rf_stride}"),
            Fact("mean purity", f"{mean * 100:.0f}%"),
            Fact("top-k", str(m.top_k)),
        )
        layer_names = m.layers
        i = layer_names.index(layer)
        sib_prev = layer_names[i - 1] if i > 0 else None
        sib_next = layer_names[i + 1] if i + 1 < len(layer_names) else None
        figures = (
            Figure("fig-preference", charts.class_preference(weighted, counts_c, ds.rec.class_names), 340),
            Figure("fig-ranks", charts.rank_histograms(per_rank, ds.rec.class_names), 360),
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
                top=top if p == 0 else (),
                bottom=bottom if p == 0 else (),
                tiles=chunk,
                pager=pager,
                page_note=f"units {first}–{last}, page {p + 1} of {n_pages}" if n_pages > 1 else "",
                n_units=len(units),
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
                row, col = divmod(r, sprite.cols)
                n_cols = len(sprite.panels) * sprite.cols
                size_css = f"{n_cols * 100}% {sprite.rows * 100}%"
                y = f"{100 * row / (sprite.rows - 1):.4g}%" if sprite.rows > 1 else "0%"
                cells = tuple(
                    SpriteCell(
                        _PANEL_LABELS.get(panel, panel),
                        size_css,
                        f"{100 * (p * sprite.cols + col) / (n_cols - 1):.4g}% {y}"
                        if n_cols > 1
                        else f"0% {y}",
                    )
                    for p, panel in enumerate(sprite.panels)
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
            charts.preference_comparison([c.net.name for c in cks], shares, ds.rec.class_names),
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
        )

    def _index_page(
        self,
        build: BuildRecord,
        datasets: Mapping[str, _Dataset],
        nets: Sequence[NetworkRecord],
        compares: Mapping[str, Sequence[NetworkRecord]],
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
            cards.append(DatasetCard(r.name, facts, picks))
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
        # Diff pages come from the diff stage; the seam is this list (empty until that stage renders them).
        diffs: tuple[Link, ...] = ()
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
