"""Layer pages (``<net>/<layer>/index.html``, ``page-2.html`` … for more than
:data:`~sitegen.render.views.unit.UNITS_PER_PAGE` units), planned after the layer's unit pages.

A layer page shows the layer's facts, its class preference and per-rank histograms, its top and
bottom classes, the analysis sections (first page only) and a tile per shown unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from sitegen.errors import RenderError
from sitegen.render import charts
from sitegen.render._models import Figure
from sitegen.render.peers import PeerFinder, panel_cell
from sitegen.render.sections import LayerPage
from sitegen.render.views import fmt
from sitegen.render.views.context import LoadedCheckpoint, LoadedDataset, PlanContext, require_array
from sitegen.render.views.models import Fact, Link, UnitTile
from sitegen.render.views.pieces import crumbs, picks
from sitegen.render.views.sprites import PANEL_LABELS, sprite_cells
from sitegen.render.views.unit import UNITS_PER_PAGE, LayerUnits, unit_pages
from sitegen.store import NetworkRecord
from sitegen.store.manifest import LayerRecord, SpriteLayout

_CLASS_ARRAYS = ("per_rank", "weighted", "purity", "dominant", "exemplars")


def layer_pages(ctx: PlanContext, ck: LoadedCheckpoint, ds: LoadedDataset, rec: LayerRecord) -> None:
    """Plan the layer's unit pages, then its layer pages."""
    lu, cls = _load(ctx, ck, ds, rec)
    tiles = unit_pages(ctx, lu)
    _pages(ctx, lu, cls, tiles)


def _load(
    ctx: PlanContext, ck: LoadedCheckpoint, ds: LoadedDataset, rec: LayerRecord
) -> tuple[LayerUnits, dict[str, np.ndarray]]:
    """The layer's shown units and mined arrays, checked against network.json; its classes arrays."""
    layer, m = rec.name, ck.manifest
    mz, cz = ck.dir / "mined.npz", ck.dir / "classes.npz"
    units = list(m.shown_units.get(layer, []))
    bad = [u for u in units if not 0 <= u < rec.units]
    if bad:
        raise RenderError(
            f"{ck.dir}/manifest.json: shown units {bad[:5]} of {layer} outside 0..{rec.units - 1}"
        )
    values = require_array(ck.mined, f"{layer}/values", mz)
    images = require_array(ck.mined, f"{layer}/images", mz)
    boxes = require_array(ck.mined, f"{layer}/boxes", mz)
    cls = {name: require_array(ck.classes, f"{layer}/{name}", cz) for name in _CLASS_ARRAYS}
    purity = cls["purity"]
    if len(values) != rec.units or len(purity) != rec.units:
        raise RenderError(f"{mz}: {layer} has {len(values)} units, network.json says {rec.units}")
    folder = f"{ck.base}{ck.layer_slugs[layer]}/"
    sprite = ctx.sprite_layout(ck, layer, units)
    peer = PeerFinder(  # other units named on this layer's unit pages (similar units, issue 15)
        base=ck.base,
        layer_slugs=ck.layer_slugs,
        manifest=m,
        layout=lambda name: ctx.sprite_layout(ck, name, m.shown_units.get(name, [])),
        image=lambda i, px: ctx.image(ds, i, px),
        cell=panel_cell(sprite_cells),
    )
    n_pages = max(1, math.ceil(len(units) / UNITS_PER_PAGE))
    page_paths = [f"{folder}index.html" if p == 0 else f"{folder}page-{p + 1}.html" for p in range(n_pages)]
    lu = LayerUnits(
        ck=ck,
        ds=ds,
        rec=rec,
        units=units,
        folder=folder,
        page_paths=page_paths,
        unit_path={u: f"{folder}unit-{u:04d}.html" for u in units},
        sprite=sprite,
        output=is_output(rec, ck.net, len(ds.chips)),
        peer=peer,
        # Plain lists: indexing numpy scalars thousands of times is the slow part of planning.
        values=values.tolist(),
        images=images.tolist(),
        boxes=boxes.tolist(),
        purity=purity.tolist(),
        dominant=cls["dominant"].tolist(),
    )
    return lu, cls


def _pages(ctx: PlanContext, lu: LayerUnits, cls: dict[str, np.ndarray], tiles: Sequence[UnitTile]) -> None:
    """The layer's pages: facts, figures, classes and sections on the first, tiles on every one."""
    ck, ds, rec, units, page_paths = lu.ck, lu.ds, lu.rec, lu.units, lu.page_paths
    layer, m = rec.name, ck.manifest
    per_rank, weighted = cls["per_rank"], cls["weighted"]
    n_pages = len(page_paths)
    top, bottom = picks(ctx, ds, weighted, cls["exemplars"])
    facts = _facts(rec, units, cls["purity"], m.top_k)
    sample_note = (
        ""
        if len(units) == rec.units
        else f"{len(units):,} of the layer's {rec.units:,} units have pages: unless the spec's "
        "units: lists them, a random sample drawn once from the build's seed and the layer's "
        "name, so every build and checkpoint shows the same units."
    )
    evo = ctx.evo_slugs.get(ck.net.name, {}).get(layer)
    evolution = (
        Link(f"{ctx.net_slugs[ck.net.name]}/evolution/{evo}.html", "Feature evolution") if evo else None
    )
    prev_layer, next_layer = _siblings(ck, layer)
    figures = (
        Figure("fig-preference", charts.class_preference(weighted, per_rank.sum(0), ds.rec.class_names), 340),
        Figure("fig-ranks", charts.rank_histograms(per_rank, ds.rec.class_names), 360),
    )
    sections = ck.sections.layer(
        LayerPage(layer, weighted, ds.rec.class_names, lu.folder, lambda u: lu.unit_path.get(u, ""))
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
        ctx.page(
            page_paths[p],
            "layer.html",
            f"{ck.net.name} · {layer}",
            crumbs(ck, Link("", layer)),
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
            tile_hint=_tile_hint(lu.sprite, m.top_k),
            n_units=len(units),
            evolution=evolution,
            prev_layer=prev_layer,
            next_layer=next_layer,
        )


def _facts(rec: LayerRecord, units: Sequence[int], purity: np.ndarray, top_k: int) -> tuple[Fact, ...]:
    mean = float(purity.mean()) if purity.size else 0.0
    return (
        Fact("module", rec.module or "(output)"),
        Fact("kind", rec.kind),
        Fact("output", fmt.shape(rec.shape)),
        Fact("units", f"{rec.units:,}"),
        Fact("shown", f"{len(units):,}" if len(units) == rec.units else f"{len(units):,} (a sample)"),
        Fact("receptive field", f"{rec.rf_size} px, stride {rec.rf_stride}"),
        Fact("mean purity", f"{mean * 100:.0f}%"),
        Fact("top-k", str(top_k)),
    )


def _siblings(ck: LoadedCheckpoint, layer: str) -> tuple[Link | None, Link | None]:
    """Links to the previous and next layer's pages (None at either end)."""
    layer_names = ck.manifest.layers
    i = layer_names.index(layer)
    sib_prev = layer_names[i - 1] if i > 0 else None
    sib_next = layer_names[i + 1] if i + 1 < len(layer_names) else None
    return (
        Link(f"{ck.base}{ck.layer_slugs[sib_prev]}/index.html", sib_prev) if sib_prev else None,
        Link(f"{ck.base}{ck.layer_slugs[sib_next]}/index.html", sib_next) if sib_next else None,
    )


def is_output(rec: LayerRecord, net: NetworkRecord, n_classes: int) -> bool:
    """Whether unit ``i`` of the layer is class ``i``: ``prob``, or the last linear layer before it
    with one unit per class (fc8 of AlexNet)."""
    if rec.kind == "prob":
        return rec.units == n_classes
    if rec.kind != "linear" or rec.units != n_classes:
        return False
    later = net.layers[[lay.name for lay in net.layers].index(rec.name) + 1 :]
    return all(lay.kind == "prob" for lay in later)


def _tile_hint(sprite: SpriteLayout | None, k: int) -> str:
    """What a layer page's unit tile shows, by the sprite's panel names."""
    if sprite is None:
        return "Each tile: the unit's three top probe images."
    recon = [PANEL_LABELS.get(p, p) for p in sprite.panels if p != "patches"]
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
