"""The atlas index page (``index.html``): a card per dataset and per network, the comparisons, the
diffs, and the build's provenance and timings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sitegen.render import charts
from sitegen.render._models import Figure
from sitegen.render.views import fmt
from sitegen.render.views.context import LoadedDataset, PlanContext
from sitegen.render.views.models import SAMPLE, ClassPick, DatasetCard, Fact, Link, NetworkCard
from sitegen.render.views.pieces import bars
from sitegen.store import BuildRecord, NetworkRecord


def index_page(
    ctx: PlanContext,
    build: BuildRecord,
    datasets: Mapping[str, LoadedDataset],
    nets: Sequence[NetworkRecord],
    compares: Mapping[str, Sequence[NetworkRecord]],
    diffs: tuple[Link, ...],
) -> None:
    """Plan the index page (last: it links every other kind of page)."""
    cards = tuple(_dataset_card(ctx, ds) for ds in datasets.values())
    net_cards = tuple(_network_card(ctx, net) for net in nets)
    total = sum(build.timings.values())
    prov = (
        Fact("spec hash", build.spec_hash),
        Fact("built", fmt.date(build.created)),
        Fact("sitegen", build.sitegen_version),
        Fact("torch", build.torch_version),
        Fact("device", build.device),
        Fact("total time", fmt.seconds(total)),
    )
    comps = tuple(
        Link(f"compare/{datasets[ds].slug}.html", ds, note=" · ".join(n.name for n in ns))
        for ds, ns in compares.items()
    )
    ctx.page(
        "index.html",
        "index.html",
        build.title,
        [],
        True,
        provenance=prov,
        timings=bars(build.timings),
        datasets=cards,
        networks=net_cards,
        comparisons=comps,
        diffs=diffs,
    )


def _dataset_card(ctx: PlanContext, ds: LoadedDataset) -> DatasetCard:
    """A dataset's facts and every class with its train / probe counts and sample images."""
    r = ds.rec
    per_class = 3 if len(r.class_names) <= 24 else 1  # 160 classes x 3 thumbnails is too much
    picks = tuple(
        ClassPick(
            ds.chips[c],
            f"{r.counts[c][0]} / {r.counts[c][1]}" if c < len(r.counts) else "",
            None,
            tuple(
                ctx.image(ds, i, SAMPLE)
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
    return DatasetCard(r.name, facts, picks, ctx.class_lists.get(r.name, ""))


def _network_card(ctx: PlanContext, net: NetworkRecord) -> NetworkCard:
    """A network's facts, accuracy per checkpoint, and links to its atlas checkpoints (newest first)."""
    atlas = ctx.atlas(net)
    slug_ = ctx.net_slugs[net.name]
    links = tuple(
        Link(f"{ctx.base(net, c.name)}index.html", c.name, note=fmt.pct(c.accuracy)) for c in atlas
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
        Fact("parameters", fmt.count(net.params)),
        Fact("input", f"{net.input_size} px"),
        Fact("layers", str(len(net.layers))),
        Fact("probe accuracy", fmt.pct(last_acc)),
    )
    return NetworkCard(
        net.name,
        f"{slug_}/index.html" if atlas else "",
        net.arch,
        facts,
        fig,
        tuple(reversed(links)),
        ctx.related[net.name],
    )
