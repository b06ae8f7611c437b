"""Diff pages (``diff/<name>/index.html``): how two checkpoints' units changed (:mod:`sitegen.diff`).

Per layer: a summary row, class preference in A and B, and the most- and least-changed units with
their sprites in both. A side of this store with atlas pages links them and reuses their sprites; a
side of another store gets its sprites copied under the diff's folder (none when that store is gone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sitegen.diff import RBO_P, DiffSide, LayerDiff, StoreDiff
from sitegen.errors import StoreError
from sitegen.render import charts, similarity
from sitegen.render._models import Chip, Figure, Img
from sitegen.render.views import fmt
from sitegen.render.views.context import PlanContext
from sitegen.render.views.models import (
    ClassShift,
    DiffLayerRow,
    DiffSection,
    Fact,
    Link,
    SpriteView,
    UnitChange,
)
from sitegen.render.views.urls import unique_slugs
from sitegen.store import CheckpointManifest, Store

DIFF_UNITS = 4  # most- and least-changed units shown per layer on a diff page


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


def diff_page(ctx: PlanContext, name: str, d: StoreDiff) -> Link:
    """Plan the page of diff ``name``; the index page's link to it."""
    path = f"diff/{name}/index.html"
    k = d.top_k
    own = ctx.datasets.get(d.dataset)  # this site's dataset: chips link its class pages
    chips = (
        own.chips
        if own is not None and list(own.rec.class_names) == list(d.class_names)
        else tuple(Chip(i, c, charts.class_color(i)) for i, c in enumerate(d.class_names))
    )
    sides = (_diff_side(ctx, "a", d.a), _diff_side(ctx, "b", d.b))
    # One network: its checkpoints name the sides; across networks, the full refs do.
    labels = [s.side.checkpoint if d.a.network == d.b.network else s.side.ref for s in sides]
    layer_slugs = unique_slugs([lay.name for lay in d.layers], frozenset())
    n_cls = len(d.class_names)
    sections, prefs = [], []
    for i, lay in enumerate(d.layers):
        row = _row(d, i, chips)
        prefs.append(
            Figure(
                f"fig-diff-pref-{i}",
                charts.preference_comparison(labels, [lay.weighted_a, lay.weighted_b], d.class_names),
                360 if n_cls <= charts.MANY_CLASSES else 420,
            )
        )
        most, least, note = _changed_units(ctx, name, d, i, sides, layer_slugs[lay.name], chips)
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
    facts = _facts(d, labels, matching)
    side_links = tuple(
        Link(f"{s.base}index.html" if s.base else "", s.side.ref, note=s.note) for s in sides
    )
    title = f"Diff · {d.a.ref} → {d.b.ref}"
    ctx.page(
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
        note=f"mean overlap {d.mean_overlap:.1f} of {k} · accuracy {fmt.signed(100 * d.accuracy_change)}",
    )


def _facts(d: StoreDiff, labels: Sequence[str], matching: similarity.MatchView) -> tuple[Fact, ...]:
    k = d.top_k
    return (
        Fact("dataset", d.dataset),
        Fact("probe fingerprint", d.fingerprint[:12]),
        Fact("top-k", str(k)),
        Fact(f"accuracy {labels[0]}", fmt.pct(d.accuracy_a)),
        Fact(f"accuracy {labels[1]}", fmt.pct(d.accuracy_b)),
        Fact("accuracy change", fmt.signed(100 * d.accuracy_change)),
        Fact("mean overlap", f"{d.mean_overlap:.2f} of {k}"),
        Fact("filter weights", "compared (cosine)" if d.has_weights else similarity.no_cosine(d)),
        Fact(matching.label, matching.value),
    )


def _row(d: StoreDiff, i: int, chips: Sequence[Chip]) -> DiffLayerRow:
    """Layer ``i``'s row of the diff page's layer table."""
    lay: LayerDiff = d.layers[i]
    k = d.top_k
    cos = lay.mean_cosine
    return DiffLayerRow(
        name=lay.name,
        anchor=f"layer-{i}",
        units=f"{lay.units:,}",
        overlap=f"{lay.mean_overlap:.2f} / {k}",
        overlap_pct=round(100 * lay.mean_overlap / max(k, 1), 1),
        rbo=f"{lay.mean_rbo:.3f}",
        l1=f"{lay.l1:.3f}",
        js=f"{lay.js:.3f}",
        purity=fmt.signed(100 * lay.mean_purity_change),
        dominant=f"{lay.dominant_changed * 100:.0f}%",
        cosine="–" if cos is None else f"{cos:.3f}",
        match_r=("–" if d.images else "") if lay.mean_match_r is None else f"{lay.mean_match_r:.2f}",
        identity="" if lay.identity is None else f"{100 * lay.identity:.0f}%",
        top=ClassShift(tuple(chips[c] for c in lay.entered_top), tuple(chips[c] for c in lay.left_top)),
        bottom=ClassShift(
            tuple(chips[c] for c in lay.entered_bottom), tuple(chips[c] for c in lay.left_bottom)
        ),
    )


def _diff_side(ctx: PlanContext, key: str, side: DiffSide) -> _DiffSide:
    local = ctx.is_local(side)
    store = ctx.store if local else Store(side.store_root)
    note, manifest = "", None
    if local:
        manifest = ctx.manifest(side.network, side.checkpoint)
    else:
        note = f"store {side.store_root}"
        try:
            manifest = store.read_manifest(side.network, side.checkpoint)
        except StoreError:
            # The diff's numbers are in this store; only the other store's sprites are lost.
            note = f"store {side.store_root} is gone: no sprites"
    base = ""
    if local and any(c.name == side.checkpoint and c.atlas for c in ctx.nets[side.network].checkpoints):
        base = ctx.base(ctx.nets[side.network], side.checkpoint)
    return _DiffSide(key, side, store, manifest, base, note)


def _changed_units(
    ctx: PlanContext,
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
            a=_diff_sprite(ctx, name, sides[0], lay.name, lslug, u, d.top_k),
            b=_diff_sprite(ctx, name, sides[1], lay.name, lslug, lay.b_unit(u), d.top_k),
            unit_b=lay.b_unit(u),
            match_r="" if lay.match_r is None or math.isnan(lay.match_r[u]) else f"{lay.match_r[u]:.2f}",
        )

    return tuple(change(u) for u in most), tuple(change(u) for u in least), ""


def _diff_sprite(
    ctx: PlanContext, name: str, sd: _DiffSide, layer: str, lslug: str, unit: int, k: int
) -> SpriteView | None:
    m = sd.manifest
    units = m.shown_units.get(layer, []) if m is not None else []
    if m is None or unit not in units:
        return None
    net, ck = sd.side.network, sd.side.checkpoint
    lay = ctx.checked_layout(sd.store, net, ck, m, layer, units)
    if lay is None:
        return None
    # A checkpoint with atlas pages here: its sprite is already in the site, beside its unit page.
    folder = ctx.atlas_unit(net, ck, layer) if sd.base else ""
    href = f"{folder}unit-{unit:04d}.html" if folder else ""
    folder = folder or f"diff/{name}/{sd.key}/{lslug}/"
    src = f"{folder}unit-{unit:04d}.webp"
    ctx.files[src] = sd.store.sprite_path(net, ck, layer, unit)
    n_cols = len(lay.panels) * lay.cols
    img = Img(src, n_cols * lay.cell, lay.rows * lay.cell, f"{sd.side.ref} {layer} unit {unit}: top-{k}")
    return SpriteView(img, f"--cols:{n_cols};--rows:{lay.rows}", href)
