"""The orchestrator: read the build record, then plan every page kind in turn (:func:`plan_site`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sitegen.diff import StoreDiff, read_diff
from sitegen.errors import RenderError
from sitegen.render.views import fmt
from sitegen.render.views.compare import compare_page
from sitegen.render.views.context import LoadedCheckpoint, LoadedDataset, PlanContext
from sitegen.render.views.diff import diff_page
from sitegen.render.views.evolution import evolution_pages
from sitegen.render.views.index import index_page
from sitegen.render.views.models import Chrome, Link, SitePlan
from sitegen.render.views.network import network_pages
from sitegen.render.views.urls import RESERVED_EVO, RESERVED_TOP, unique_slugs
from sitegen.store import NetworkRecord, Store


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
    ctx = PlanContext(store)
    build = store.read_build()
    datasets = {name: ctx.dataset(name) for name in build.datasets}
    nets = [store.read_network(n) for n in build.networks]
    for n in nets:
        if n.dataset not in datasets:
            raise RenderError(
                f"network {n.name!r} uses dataset {n.dataset!r}, which build.json does not list"
            )
    ctx.net_slugs = unique_slugs([n.name for n in nets], RESERVED_TOP)
    compares = {ds: [n for n in nets if n.dataset == ds and ctx.atlas(n)] for ds in datasets}
    compares = {ds: ns for ds, ns in compares.items() if len(ns) >= 2}
    ctx.chrome = Chrome(
        title=build.title,
        nav=tuple(
            [Link(f"{ctx.net_slugs[n.name]}/index.html", n.name) for n in nets if ctx.atlas(n)]
            + [Link(f"compare/{datasets[ds].slug}.html", f"Compare · {ds}") for ds in compares]
        ),
        version=build.sitegen_version,
        spec_hash=build.spec_hash[:12],
        created=fmt.date(build.created),
    )

    # Issue 6: diffs (listed in build.json) and feature evolution (>= 2 checkpoint entries).
    ctx.nets = {n.name: n for n in nets}
    ctx.entries = {n.name: ctx.store_entries(n) for n in nets}
    ctx.evo_slugs = {
        n.name: unique_slugs(ctx.manifest(n.name, ctx.entries[n.name][-1].name).layers, RESERVED_EVO)
        for n in nets
        if len(ctx.entries[n.name]) >= 2
    }
    diffs: dict[str, StoreDiff] = {}
    for diff_ref in build.diffs:
        if diff_ref.name not in diffs:
            diffs[diff_ref.name] = read_diff(store, diff_ref.name)
    ctx.related = {n.name: _related(ctx, n, diffs) for n in nets}

    last: dict[str, LoadedCheckpoint] = {}
    for net in nets:
        atlas = ctx.atlas(net)
        for ref in atlas:
            ck = ctx.checkpoint(net, ref.name, ctx.base(net, ref.name))
            network_pages(ctx, ck, datasets[net.dataset], atlas)
            last[net.name] = ck  # atlas checkpoints are in order: the last one wins
    for net in nets:
        if net.name in ctx.evo_slugs:
            evolution_pages(ctx, net)
    for ds_name, ns in compares.items():
        compare_page(ctx, datasets[ds_name], [last[n.name] for n in ns])
    ctx.datasets = datasets
    ctx.class_lists = _class_pages(ctx, datasets, [last[n.name] for n in nets if n.name in last])
    diff_links = tuple(diff_page(ctx, name, d) for name, d in diffs.items())
    index_page(ctx, build, datasets, nets, compares, diff_links)
    # GitHub Pages answers any missing URL, at any depth, with /404.html (templates/404.html).
    ctx.page("404.html", "404.html", "Page not found", [], False)
    classes = max((len(d.chips) for d in datasets.values()), default=0)
    return SitePlan(pages=tuple(ctx.pages), files=dict(ctx.files), classes=classes)


def _class_pages(
    ctx: PlanContext, datasets: Mapping[str, LoadedDataset], last: Sequence[LoadedCheckpoint]
) -> dict[str, str]:
    """Issue 15: one page per class (sitegen.render.classes); dataset -> its class list."""
    from sitegen.render.classes import ClassHooks, plan_class_pages

    hooks = ClassHooks(
        image=ctx.image,
        sprite_layout=ctx.sprite_layout,
        sprite_path=lambda ck, layer, u: ctx.store.sprite_path(ck.net.name, ck.name, layer, u),
        add_file=ctx.files.__setitem__,
        page=ctx.page,
    )
    return plan_class_pages(datasets, last, hooks)


def _related(ctx: PlanContext, net: NetworkRecord, diffs: Mapping[str, StoreDiff]) -> tuple[Link, ...]:
    """Links from a network's pages to its feature evolution and to the diffs of its checkpoints."""
    out = []
    if net.name in ctx.evo_slugs:
        out.append(
            Link(
                f"{ctx.net_slugs[net.name]}/evolution/index.html",
                "Feature evolution",
                note=f"{len(ctx.entries[net.name])} checkpoints",
            )
        )
    for name, d in diffs.items():
        if any(s.network == net.name and ctx.is_local(s) for s in (d.a, d.b)):
            out.append(Link(f"diff/{name}/index.html", f"Diff {d.a.ref} → {d.b.ref}", note="diff"))
    return tuple(out)
