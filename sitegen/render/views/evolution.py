"""Feature evolution pages (``<net>/evolution/``; Zeiler & Fergus 2013, Fig. 4), for networks with two
or more checkpoints in the store: per-layer stability curves (``index.html``), and per layer
(``<layer>.html``) sampled units' rank-1 patch and reconstruction at every checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sitegen.diff import topk_overlap
from sitegen.render import charts
from sitegen.render._models import Figure
from sitegen.render.views import fmt
from sitegen.render.views.context import PlanContext, require_array
from sitegen.render.views.models import EvoCell, EvoColumn, EvoLayerRow, EvoRow, Link
from sitegen.render.views.sprites import PANEL_LABELS, sprite_cells
from sitegen.render.views.urls import unique_slugs
from sitegen.store import NetworkRecord
from sitegen.store.manifest import EVOLUTION_UNITS, CheckpointManifest, CheckpointRef, evenly_spaced

Overlaps = dict[str, list[np.ndarray | None]]  # layer -> per checkpoint (None: not comparable)


def evolution_pages(ctx: PlanContext, net: NetworkRecord) -> None:
    """Plan the network's feature evolution index and one page per layer of its final checkpoint."""
    entries = ctx.entries[net.name]
    final = entries[-1]
    mf = ctx.manifest(net.name, final.name)
    k = mf.top_k
    slugs = ctx.evo_slugs[net.name]
    net_slug = ctx.net_slugs[net.name]
    folder = f"{net_slug}/evolution/"
    manifests = [ctx.manifest(net.name, c.name) for c in entries]
    numeric = all(c.epoch is not None for c in entries)
    overlaps = _overlaps(ctx, net, entries, manifests)
    means = {
        layer: [float(o.mean()) if o is not None and o.size else None for o in per]
        for layer, per in overlaps.items()
    }

    columns = tuple(
        EvoColumn(
            c.name,
            f"epoch {c.epoch}" if c.epoch is not None else "",
            fmt.pct(c.accuracy),
            f"{ctx.base(net, c.name)}index.html" if c.atlas else "",
        )
        for c in entries
    )
    crumbs = [Link("index.html", "Atlas")]
    if ctx.atlas(net):
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
    ctx.page(
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
    layer_crumbs = [*crumbs, Link(index, "Feature evolution")]
    for layer in mf.layers:
        _layer_page(ctx, net, layer, manifests, overlaps, means[layer], layer_crumbs, common)


def _overlaps(
    ctx: PlanContext,
    net: NetworkRecord,
    entries: Sequence[CheckpointRef],
    manifests: Sequence[CheckpointManifest],
) -> Overlaps:
    """Top-k overlap of every unit with the final checkpoint (diff.topk_overlap), per layer and checkpoint."""
    final, mf = entries[-1], manifests[-1]
    overlaps: Overlaps = {}
    final_path = ctx.store.checkpoint_dir(net.name, final.name) / "mined.npz"
    for layer in mf.layers:
        ref = require_array(ctx.mined_arrays(net.name, final.name), f"{layer}/images", final_path)
        per: list[np.ndarray | None] = []
        for c, m in zip(entries, manifests, strict=True):
            imgs = ctx.mined_arrays(net.name, c.name).get(f"{layer}/images")
            ok = imgs is not None and layer in m.layers and imgs.shape == ref.shape
            per.append(topk_overlap(imgs, ref) if imgs is not None and ok else None)
        overlaps[layer] = per
    return overlaps


def _layer_page(
    ctx: PlanContext,
    net: NetworkRecord,
    layer: str,
    manifests: Sequence[CheckpointManifest],
    overlaps: Overlaps,
    means: Sequence[float | None],
    crumbs: Sequence[Link],
    common: dict[str, Any],
) -> None:
    """One layer's evolution page: a row per sampled unit, a cell per checkpoint."""
    entries = ctx.entries[net.name]
    mf, k = manifests[-1], common["k"]
    slugs = ctx.evo_slugs[net.name]
    folder = f"{ctx.net_slugs[net.name]}/evolution/"
    ck_slugs = unique_slugs([c.name for c in entries], frozenset())
    units = evenly_spaced(mf.shown_units.get(layer, []), EVOLUTION_UNITS)  # as build samples
    rows = []
    for u in units:
        cells = tuple(
            _evo_cell(
                ctx,
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
    ctx.page(
        f"{folder}{slugs[layer]}.html",
        "evolution.html",
        f"{net.name} · {layer} · feature evolution",
        [*crumbs, Link("", layer)],
        False,
        layer=layer,
        figure=None,
        table=(),
        rows=tuple(rows),
        means=tuple("–" if v is None else f"{v:.1f}" for v in means),
        siblings=tuple(
            Link(f"{folder}{slugs[other]}.html", other, current=other == layer) for other in mf.layers
        ),
        **common,
    )


def _evo_cell(
    ctx: PlanContext,
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
    lay = ctx.checked_layout(ctx.store, net.name, ck.name, m, layer, units)
    if lay is None:
        return None
    atlas = ctx.atlas_unit(net.name, ck.name, layer)
    src = f"{atlas or folder}unit-{unit:04d}.webp"
    ctx.files[src] = ctx.store.sprite_path(net.name, ck.name, layer, unit)
    note = "final" if final else ("–" if overlap is None else f"{int(overlap[unit])}/{k}")
    title = f"{ck.name}: unit {unit}, rank-1 " + " and ".join(PANEL_LABELS.get(p, p) for p in lay.panels[:2])
    if not final and overlap is not None:
        title += f"; {note} of its top-{k} images are in the final top-{k}"
    return EvoCell(
        src,
        sprite_cells(lay, 0, 2),
        note,
        f"{atlas}unit-{unit:04d}.html" if atlas else "",
        title,
    )
