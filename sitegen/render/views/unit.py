"""Unit pages (``<net>/<layer>/unit-0007.html``) and the unit tiles of their layer's pages.

A unit page shows the unit's top-k images (each with its receptive-field box and the matching cells
of the unit's sprite: patch and reconstructions), the class mix of those images, and the analysis
sections; :func:`unit_pages` plans every shown unit of a layer and returns their tiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sitegen.render._models import Chip, Img
from sitegen.render.peers import PeerFinder
from sitegen.render.sections import UnitPage
from sitegen.render.views import fmt
from sitegen.render.views.context import LoadedCheckpoint, LoadedDataset, PlanContext
from sitegen.render.views.models import FULL, THUMB, Bar, Box, Link, SpriteCell, TopEntry, UnitTile
from sitegen.render.views.pieces import crumbs
from sitegen.render.views.sprites import PANEL_LABELS, is_placed, panels_alt, placement_vars, sprite_cells
from sitegen.store.manifest import LayerRecord, SpriteLayout

UNITS_PER_PAGE = 256  # keeps a layer page well under 2 MB of HTML (VGG-19 fc6 has 4096 units)


@dataclass(frozen=True)
class LayerUnits:
    """A layer's shown units and what their pages read. Per-unit data are plain lists: indexing numpy
    scalars thousands of times is the slow part of planning."""

    ck: LoadedCheckpoint
    ds: LoadedDataset
    rec: LayerRecord
    units: list[int]
    folder: str  # site folder of the layer's pages: "tiny-alex/conv1/"
    page_paths: list[str]  # the layer's pages: index.html, page-2.html …
    unit_path: dict[int, str]
    sprite: SpriteLayout | None
    output: bool  # unit i is class i (see layer.is_output)
    peer: PeerFinder
    values: list[list[float]]
    images: list[list[int]]
    boxes: list[list[list[int]]]
    purity: list[float]
    dominant: list[int]


def unit_pages(ctx: PlanContext, lu: LayerUnits) -> list[UnitTile]:
    """Plan the page of every shown unit of the layer; their tiles, in the same order."""
    tiles = []
    for pos, u in enumerate(lu.units):
        sprite_img = _sprite_img(ctx, lu, u)
        entries = top_entries(ctx, lu.ck, lu.ds, lu.sprite, lu.values[u], lu.images[u], lu.boxes[u])
        tiles.append(_tile(ctx, lu, u, sprite_img, entries))
        _unit_page(ctx, lu, pos, sprite_img, entries)
    return tiles


def _sprite_img(ctx: PlanContext, lu: LayerUnits, u: int) -> Img | None:
    sprite, ck = lu.sprite, lu.ck
    if sprite is None:
        return None
    src = f"{lu.folder}unit-{u:04d}.webp"
    ctx.files[src] = ctx.store.sprite_path(ck.net.name, ck.name, lu.rec.name, u)
    n_cols = len(sprite.panels) * sprite.cols
    return Img(
        src,
        n_cols * sprite.cell,
        sprite.rows * sprite.cell,
        f"unit {u}: " + panels_alt(sprite.panels, ck.manifest.top_k),
    )


def _tile(
    ctx: PlanContext, lu: LayerUnits, u: int, sprite_img: Img | None, entries: Sequence[TopEntry]
) -> UnitTile:
    ds, sprite = lu.ds, lu.sprite
    dom = ds.chips[lu.dominant[u]]
    if sprite is None:
        thumbs = tuple(ctx.image(ds, e.image_index, THUMB) for e in entries[:3])
    elif "patches" not in sprite.panels:
        thumbs = tuple(ctx.image(ds, e.image_index, THUMB) for e in entries)
    else:
        thumbs = ()
    return UnitTile(
        unit=u,
        label=f"{u:04d} · {ds.chips[u].name}" if lu.output and u < len(ds.chips) else f"{u:04d}",
        href=lu.unit_path[u],
        sprite=sprite_img,
        thumbs=thumbs,
        grid=f"--cols:{len(sprite.panels) * sprite.cols};--rows:{sprite.rows}" if sprite else "",
        thumb_cols=sprite.cols if sprite else 3,
        purity=round(lu.purity[u], 4),
        purity_text=f"{lu.purity[u] * 100:.0f}%",
        chip=dom,
        value=fmt.value(lu.values[u][0]) if lu.values[u] else "–",
    )


def _unit_page(
    ctx: PlanContext, lu: LayerUnits, pos: int, sprite_img: Img | None, entries: Sequence[TopEntry]
) -> None:
    ck, ds, rec, sprite, units = lu.ck, lu.ds, lu.rec, lu.sprite, lu.units
    layer, u, unit_path = rec.name, units[pos], lu.unit_path
    counts: dict[int, int] = {}
    for e in entries:
        counts[e.chip.index] = counts.get(e.chip.index, 0) + 1
    mix = tuple(
        Bar(ds.chips[c].name, str(n), round(100 * n / len(entries), 1), ds.chips[c])
        for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    )
    prev_u = units[pos - 1] if pos > 0 else None
    next_u = units[pos + 1] if pos + 1 < len(units) else None
    # Output units (prob, and the linear layer that feeds it) are classes: name them.
    out_class: Chip | None = ds.chips[u] if lu.output and u < len(ds.chips) else None
    heading = f"Unit {u} · {out_class.name}" if out_class else f"Unit {u}"
    title = f"{ck.net.name} · {layer} · unit {u}" + (f" · {out_class.name}" if out_class else "")
    layer_href = lu.page_paths[pos // UNITS_PER_PAGE]
    placed = is_placed(sprite, [e.rank for e in entries])
    ctx.page(
        unit_path[u],
        "unit.html",
        title,
        crumbs(ck, Link(layer_href, layer), Link("", f"unit {u}")),
        False,
        net=ck.net.name,
        layer=layer,
        unit=u,
        heading=heading,
        out_class=out_class,
        kind=rec.kind,
        entries=entries,
        mix=mix,
        purity=f"{lu.purity[u] * 100:.0f}%",
        chip=ds.chips[lu.dominant[u]],
        sprite=sprite_img,
        panels=tuple(sprite.panels) if sprite else (),
        placed=placed,
        cell_vars=placement_vars(sprite) if placed and sprite else "",
        prev=Link(unit_path[prev_u], f"unit {prev_u}") if prev_u is not None else None,
        next=Link(unit_path[next_u], f"unit {next_u}") if next_u is not None else None,
        position=f"{pos + 1} of {len(units)}",
        rf=f"{rec.rf_size} px",
        layer_href=layer_href,
        sections=ck.sections.unit(UnitPage(layer, u, lu.folder, lu.peer, ds.chips)) if ck.sections else (),
        recon_note=_recon_note(sprite.panels if sprite else (), ds.rec.grayscale),
        overlay=sprite is not None and "patches" in sprite.panels and len(sprite.panels) > 1,
    )


def top_entries(
    ctx: PlanContext,
    ck: LoadedCheckpoint,
    ds: LoadedDataset,
    sprite: SpriteLayout | None,
    values: list[float],
    images: list[int],
    boxes: list[list[int]],
) -> tuple[TopEntry, ...]:
    """A unit's top-k images (probe-image padding skipped), each with its RF box and sprite cells."""
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
                for c, panel in zip(sprite_cells(sprite, r), sprite.panels, strict=True)
                if panel != "patches" or rf_box is not None
            )
        out.append(
            TopEntry(
                rank=r + 1,
                value=fmt.value(v),
                image_index=idx,
                chip=ds.chips[ds.labels[idx]],
                image=ctx.image(ds, idx, FULL),
                box=rf_box,
                cells=cells,
                image_first=not any(c.panel == PANEL_LABELS["patches"] for c in cells),
            )
        )
    return tuple(out)


def _recon_note(panels: Sequence[str], grayscale: bool) -> str:
    """How the unit page's reconstructions are drawn (issue 14: say what a grey value means)."""
    methods = [PANEL_LABELS.get(p, p) for p in panels if p != "patches"]
    if not methods:
        return ""
    note = (
        f"{' and '.join(methods).capitalize()}: mid-grey is no contribution; brighter and darker pixels "
        "push the unit up and down, stretched so that the strongest 0.5 % of the signal saturates."
    )
    if grayscale:
        note += " The images are grey, so each reconstruction is shown in grey: the sum over its channels."
    return note
