"""Class pages (issue 15, item 4): per class of each dataset, the units that prefer it most.

``classes/<dataset>/<class>.html`` for every class, and ``classes/<dataset>/index.html`` listing
them (linked from the dataset's card on the index page; every class chip of the site links its
class page). A class page merges, over every layer and every network of the dataset (each at its
network page's checkpoint, the last atlas one), the per-layer lists of the ``classes`` documents
(:mod:`sitegen.analyses.classes`): the best :data:`OVERALL` units by rank-weighted share and by
selectivity (ties: network order, then layer order, then unit index), and the best
:data:`PER_LAYER` of each layer. Each unit shows its rank-1 patch (a cell of its sprite, as on unit
pages) or, without one (fc / prob units, layers without sprites), its rank-1 probe image. Beside
them: probe images of the class, and per network its probe accuracy and the classes it is
confused with (``classes.npz`` ``confusion``: rows true, columns predicted).

Page-level aggregation only: nothing here computes a score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sitegen.errors import RenderError
from sitegen.render._models import Chip, Img
from sitegen.store.formats import ClassesDoc, ClassRanking

if TYPE_CHECKING:
    from sitegen.render.views.context import LoadedCheckpoint, LoadedDataset
    from sitegen.render.views.models import SpriteCell
    from sitegen.store.manifest import SpriteLayout

__all__ = ["OVERALL", "PER_LAYER", "ClassHooks", "class_paths", "plan_class_pages"]

OVERALL = 12  # units per ranking over all layers and networks
PER_LAYER = 3  # units per ranking and layer
EXEMPLARS = 8  # probe images of the class
CONFUSED = 3  # classes listed per direction of confusion
PATCH, IMAGE = 72, 96  # CSS px of a unit's rank-1 patch / image, and of the exemplars


def class_paths(dataset_slug: str, class_names: Sequence[str]) -> list[str]:
    """Site path of each class page: ``classes/<dataset>/<class slug>.html``, slugs unique
    (case-insensitively: ``-2``, ``-3`` … on a collision; ``index`` is the dataset's class list)."""
    from sitegen.render.views.urls import unique_slugs

    slugs = unique_slugs(list(dict.fromkeys(class_names)), frozenset({"index"}))
    seen: dict[str, int] = {}
    out = []
    for name in class_names:  # two classes of the same name (a user error) still get two pages
        n = seen[name] = seen.get(name, 0) + 1
        s = slugs[name] if n == 1 else f"{slugs[name]}-dup{n}"
        out.append(f"classes/{dataset_slug}/{s}.html")
    return out


@dataclass(frozen=True, slots=True)
class ClassHooks:
    """What the page planner lends: probe images, checked sprite layouts, site files and pages."""

    image: Callable[[LoadedDataset, int, int], Img]
    sprite_layout: Callable[[LoadedCheckpoint, str, Sequence[int]], SpriteLayout | None]
    sprite_path: Callable[[LoadedCheckpoint, str, int], Path]  # store file of a unit's sprite
    add_file: Callable[[str, Path], None]
    page: Callable[..., None]  # views.context.PlanContext.page


# --- view models -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassUnit:
    """A unit listed on a class page: where it is, its value, and its rank-1 patch or image."""

    network: str
    layer: str
    unit: int
    href: str
    value: str
    pct: float  # bar width, 0..100
    sprite: str  # site path of its sprite ("" without a patch cell)
    cell: SpriteCell | None
    image: Img | None  # the rank-1 probe image where there is no patch cell


@dataclass(frozen=True, slots=True)
class LayerLine:
    """One layer of one network on a class page: its best units by each ranking."""

    network: str
    layer: str
    href: str
    share: tuple[ClassUnit, ...]
    share_count: str
    selectivity: tuple[ClassUnit, ...] | None  # None: undefined for this layer
    sel_count: str  # or why there is no selectivity


@dataclass(frozen=True, slots=True)
class Confusion:
    chip: Chip
    count: int


@dataclass(frozen=True, slots=True)
class ClassNet:
    """A network's probe accuracy on the class, and its confusions."""

    network: str
    href: str
    checkpoint: str
    accuracy: str
    correct: str
    predicted_as: tuple[Confusion, ...]  # the class's images predicted as other classes
    taken_for: tuple[Confusion, ...]  # other classes' images predicted as this class


@dataclass(frozen=True, slots=True)
class IndexRow:
    chip: Chip
    probe: int
    train: int
    accuracy: tuple[str, ...]  # per network
    best: ClassUnit | None  # the best unit by share


# --- the planner -------------------------------------------------------------------------------------


@dataclass
class _Net:
    """One network's checkpoint as the class pages read it (per-layer lists read once)."""

    ck: LoadedCheckpoint
    order: int
    doc: ClassesDoc | None
    confusion: np.ndarray
    # layer -> rank-1 image and box of every unit, and the units with pages
    first: dict[str, tuple[list[int], list[list[int]], set[int]]]


def plan_class_pages(
    datasets: Mapping[str, LoadedDataset],
    checkpoints: Sequence[LoadedCheckpoint],
    hooks: ClassHooks,
) -> dict[str, str]:
    """Plan every class page and each dataset's class list.

    Args:
        datasets: by name, with chips already linked to :func:`class_paths`.
        checkpoints: each network's network-page checkpoint, in network order.
        hooks: the planner's helpers.

    Returns:
        Dataset name -> site path of its class list.
    """
    from sitegen.render.views.models import Link

    out = {}
    for name, ds in datasets.items():
        own = [ck for ck in checkpoints if ck.net.dataset == name]
        nets = [_load(ck, i, len(ds.chips)) for i, ck in enumerate(own)]
        index = f"classes/{ds.slug}/index.html"
        rows = []
        n = len(ds.chips)
        for c, chip in enumerate(ds.chips):
            share = _overall(nets, c, "share", OVERALL)
            sel = _overall(nets, c, "selectivity", OVERALL)
            units = (
                tuple(_unit(hooks, ds, net, lay, u, v, "share") for net, lay, u, v in share),
                tuple(_unit(hooks, ds, net, lay, u, v, "selectivity") for net, lay, u, v in sel),
            )
            accs = tuple(_accuracy(ds, net, c) for net in nets)
            prev_c, next_c = ds.chips[(c - 1) % n], ds.chips[(c + 1) % n]
            r = ds.rec
            counts = r.counts[c] if c < len(r.counts) else [0, 0]
            hooks.page(
                chip.href,
                "class.html",
                f"{chip.name} · {name}",
                [Link("index.html", "Atlas"), Link(index, f"Classes · {name}"), Link("", chip.name)],
                False,
                dataset=name,
                chip=chip,
                counts=f"{counts[0]:,} train / {counts[1]:,} probe images",
                exemplars=tuple(
                    hooks.image(ds, i, IMAGE)
                    for i in (r.samples[c] if c < len(r.samples) else [])[:EXEMPLARS]
                ),
                nets=accs,
                share=units[0],
                selectivity=units[1],
                sel_note=_sel_note(nets),
                layers=tuple(_layer_lines(hooks, ds, nets, c)),
                index_href=index,
                prev=Link(prev_c.href, prev_c.name) if n > 1 else None,
                next=Link(next_c.href, next_c.name) if n > 1 else None,
                overall=OVERALL,
                per_layer=PER_LAYER,
            )
            rows.append(
                IndexRow(
                    chip,
                    counts[1],
                    counts[0],
                    tuple(a.accuracy for a in accs),
                    units[0][0] if units[0] else None,
                )
            )
        hooks.page(
            index,
            "classes.html",
            f"Classes · {name}",
            [Link("index.html", "Atlas"), Link("", f"Classes · {name}")],
            False,
            dataset=name,
            networks=tuple(net.ck.net.name for net in nets),
            rows=tuple(rows),
            has_units=any(net.doc is not None for net in nets),
        )
        out[name] = index
    return out


def _load(ck: LoadedCheckpoint, order: int, n_classes: int) -> _Net:
    from sitegen.render.views.context import require_array

    doc = ck.sections.docs.get("classes") if ck.sections else None
    if doc is not None and not isinstance(doc, ClassesDoc):
        raise TypeError(f"classes document of {ck.net.name} is a {type(doc).__name__}")
    if doc is not None:
        for layer, lay in doc.layers.items():
            rankings = [lay.share] + ([lay.selectivity] if lay.selectivity is not None else [])
            if any(len(r.units) != n_classes for r in rankings):
                raise RenderError(
                    f"{ck.dir / 'classes.json'}: {layer} ranks {len(lay.share.units)} classes, the dataset "
                    f"has {n_classes}; rerun `sitegen build`"
                )
    confusion = require_array(ck.classes, "confusion", ck.dir / "classes.npz")
    return _Net(ck=ck, order=order, doc=doc, confusion=np.asarray(confusion), first={})


def _ranking(net: _Net, layer: str, which: str) -> ClassRanking | None:
    lay = net.doc.layers.get(layer) if net.doc is not None else None
    if lay is None:
        return None
    return lay.share if which == "share" else lay.selectivity


def _overall(nets: Sequence[_Net], c: int, which: str, n: int) -> list[tuple[_Net, int, int, float]]:
    """The best ``n`` (net, layer position, unit, value) over every layer, by value then position."""
    pool = []
    for net in nets:
        for li, layer in enumerate(net.ck.manifest.layers):
            r = _ranking(net, layer, which)
            if r is None or c >= len(r.units):
                continue
            pool += [(-v, net.order, li, u, net) for u, v in zip(r.units[c], r.values[c], strict=True)]
    pool.sort(key=lambda t: t[:4])
    return [(net, li, u, -neg) for neg, _, li, u, net in pool[:n]]


def _layer_lines(hooks: ClassHooks, ds: LoadedDataset, nets: Sequence[_Net], c: int) -> list[LayerLine]:
    out = []
    for net in nets:
        if net.doc is None:
            continue
        ck = net.ck
        for li, layer in enumerate(ck.manifest.layers):
            lay = net.doc.layers.get(layer)
            if lay is None or c >= len(lay.share.units):
                continue

            sel = lay.selectivity
            why = "undefined: negative values" if net.doc.activations else "no per-image activations"
            out.append(
                LayerLine(
                    network=ck.net.name,
                    layer=layer,
                    href=f"{ck.base}{ck.layer_slugs[layer]}/index.html",
                    share=_best(hooks, ds, net, li, lay.share, c, "share"),
                    share_count=f"{lay.share.count[c]:,} of {lay.shown:,}",
                    selectivity=_best(hooks, ds, net, li, sel, c, "selectivity") if sel is not None else None,
                    sel_count=f"{sel.count[c]:,} of {lay.shown:,}" if sel is not None else why,
                )
            )
    return out


def _best(
    hooks: ClassHooks, ds: LoadedDataset, net: _Net, li: int, r: ClassRanking, c: int, which: str
) -> tuple[ClassUnit, ...]:
    picked = zip(r.units[c][:PER_LAYER], r.values[c][:PER_LAYER], strict=True)
    return tuple(_unit(hooks, ds, net, li, u, v, which) for u, v in picked)


def _unit(
    hooks: ClassHooks, ds: LoadedDataset, net: _Net, li: int, u: int, v: float, which: str
) -> ClassUnit:
    from sitegen.render.views.sprites import sprite_cells

    ck = net.ck
    layer = ck.manifest.layers[li]
    folder = f"{ck.base}{ck.layer_slugs[layer]}/"
    shown = ck.manifest.shown_units.get(layer, [])
    if layer not in net.first:
        mined = ck.mined
        net.first[layer] = (
            np.asarray(mined[f"{layer}/images"])[:, 0].tolist(),
            np.asarray(mined[f"{layer}/boxes"])[:, 0].tolist(),
            set(shown),
        )
    images, boxes, has_page = net.first[layer]
    if u not in has_page or not 0 <= u < len(images):
        raise RenderError(
            f"{ck.dir / 'classes.json'}: lists unit {u} of {layer}, which has no page; rerun `sitegen build`"
        )
    sprite = hooks.sprite_layout(ck, layer, shown)
    size = ck.net.input_size
    whole = tuple(boxes[u]) == (0, 0, size, size)
    cell, src, image = None, "", None
    if sprite is not None and "patches" in sprite.panels and not whole:
        cell = sprite_cells(sprite, 0)[sprite.panels.index("patches")]
        src = f"{folder}unit-{u:04d}.webp"
        hooks.add_file(src, hooks.sprite_path(ck, layer, u))
    elif images[u] >= 0:
        image = hooks.image(ds, images[u], PATCH)
    if which == "share":
        value, pct = f"{100 * v:.0f}%", 100 * v
    else:
        value, pct = f"{v:.2f}", 100 * v
    return ClassUnit(
        network=ck.net.name,
        layer=layer,
        unit=u,
        href=f"{folder}unit-{u:04d}.html",
        value=value,
        pct=round(min(max(pct, 0.0), 100.0), 1),
        sprite=src,
        cell=cell,
        image=image,
    )


def _accuracy(ds: LoadedDataset, net: _Net, c: int) -> ClassNet:
    conf = net.confusion
    row, col = conf[c], conf[:, c]
    n = int(row.sum())

    def top(v: np.ndarray) -> tuple[Confusion, ...]:
        others = [(int(x), i) for i, x in enumerate(v.tolist()) if i != c and x > 0]
        others.sort(key=lambda t: (-t[0], t[1]))
        return tuple(Confusion(ds.chips[i], x) for x, i in others[:CONFUSED])

    ck = net.ck
    return ClassNet(
        network=ck.net.name,
        href=f"{ck.base}index.html",
        checkpoint=ck.name,
        accuracy=f"{100 * int(row[c]) / n:.0f}%" if n else "–",
        correct=f"{int(row[c]):,} of {n:,}",
        predicted_as=top(row),
        taken_for=top(col),
    )


def _sel_note(nets: Sequence[_Net]) -> str:
    """Why selectivity is missing, when it is (page text)."""
    if not nets:
        return "No network of this dataset has atlas pages."
    docs = [net.doc for net in nets if net.doc is not None]
    if not docs:
        return (
            "Unit rankings are not in this build: the classes analysis was off "
            "(analyses.classes.enabled) when it was built."
        )
    if not any(d.activations for d in docs):
        return (
            "Selectivity needs the per-image activations, which this build did not keep "
            "(analyses.activations.enabled: false)."
        )
    return ""
