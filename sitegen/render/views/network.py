"""The network page of one checkpoint (``<net>/index.html``, ``<net>/@<checkpoint>/index.html``).

Planning it plans its layers' pages first (:mod:`.layer`, which plans their unit pages); the page
shows the layer table, class preference and confusion figures, training curves, the first layer's
filters, activation maps (:mod:`.actmaps`) and the analysis sections.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sitegen.render import charts
from sitegen.render._models import Figure, Img
from sitegen.render.sections import NetworkPage, Section
from sitegen.render.views import fmt
from sitegen.render.views.actmaps import actmaps
from sitegen.render.views.context import LoadedCheckpoint, LoadedDataset, PlanContext, require_array
from sitegen.render.views.layer import layer_pages
from sitegen.render.views.models import Fact, LayerRow, Link
from sitegen.render.views.pieces import bars, bias_rows, crumbs
from sitegen.render.views.urls import page_root
from sitegen.store import NetworkRecord
from sitegen.store.manifest import CheckpointManifest, CheckpointRef


def network_pages(
    ctx: PlanContext, ck: LoadedCheckpoint, ds: LoadedDataset, atlas: Sequence[CheckpointRef]
) -> None:
    """Plan the checkpoint's layer and unit pages, then its network page."""
    net, m = ck.net, ck.manifest
    layers = {lay.name: lay for lay in net.layers}
    npz = ck.dir / "classes.npz"
    tabs = tuple(
        Link(
            f"{ctx.base(net, c.name)}index.html",
            c.name,
            current=c.name == ck.name,
            note=fmt.pct(c.accuracy),
        )
        for c in atlas
    )
    rows = _layer_rows(ctx, ck, ds)
    overall = require_array(ck.classes, "overall/weighted", npz)
    figures = _figures(ck, ds, overall)
    training = _training(net, atlas)
    facts = (
        Fact("architecture", net.arch),
        Fact("dataset", net.dataset),
        Fact("checkpoint", ck.name),
        Fact("probe accuracy", fmt.pct(m.accuracy)),
        Fact("parameters", fmt.count(net.params)),
        Fact("input", f"{net.input_size} px"),
        Fact("normalization", net.normalization.kind),
        Fact("top-k", str(m.top_k)),
        Fact("weights", net.weights or ("trained by sitegen" if net.training else "–")),
    )
    build_facts = _build_facts(m)
    timings = bars(m.timings)
    title = net.name if ck.base.count("/") == 1 else f"{net.name} @ {ck.name}"
    sections = _sections(ctx, ck, ds, overall)
    ctx.page(
        f"{ck.base}index.html",
        "network.html",
        title,
        crumbs(ck)[:-1] + [Link("", title)],
        True,
        net=net.name,
        checkpoint=ck.name,
        facts=facts,
        build_facts=build_facts,
        tabs=tabs if len(tabs) > 1 else (),
        related=ctx.related[net.name],
        layers=rows,
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
        bias=bias_rows(ctx, ck, ds),
        figures=figures,
        training=training,
        timings=timings,
        filters=filters(ctx, ck),
        actmaps=actmaps(ctx, ck, ds, layers),
        sections=sections,
        dataset=ds.rec.name,
        wide=len(ds.rec.class_names) > charts.MANY_CLASSES,
    )


def _layer_rows(ctx: PlanContext, ck: LoadedCheckpoint, ds: LoadedDataset) -> tuple[LayerRow, ...]:
    """The layer table's rows; each layer's pages are planned as its row is made."""
    net, m = ck.net, ck.manifest
    layers = {lay.name: lay for lay in net.layers}
    npz = ck.dir / "classes.npz"
    rows = []
    for layer in m.layers:
        rec = layers[layer]
        purity = require_array(ck.classes, f"{layer}/purity", npz)
        mean = float(purity.mean()) if purity.size else 0.0
        n_shown = len(m.shown_units.get(layer, []))
        rows.append(
            LayerRow(
                name=layer,
                href=f"{ck.base}{ck.layer_slugs[layer]}/index.html",
                module=rec.module or "(output)",
                kind=rec.kind,
                shape=fmt.shape(rec.shape),
                units=f"{rec.units:,}" if n_shown == rec.units else f"{n_shown:,} of {rec.units:,}",
                rf=f"{rec.rf_size} px",
                purity=f"{mean * 100:.0f}%",
                purity_pct=round(mean * 100, 1),
            )
        )
        layer_pages(ctx, ck, ds, rec)
    return tuple(rows)


def _figures(ck: LoadedCheckpoint, ds: LoadedDataset, overall: np.ndarray) -> dict[str, Figure]:
    """Overall class preference, confusion matrix and per-class accuracy."""
    m = ck.manifest
    npz = ck.dir / "classes.npz"
    counts = sum(
        (require_array(ck.classes, f"{lay}/per_rank", npz).sum(0) for lay in m.layers),
        np.zeros(len(overall)),
    )
    confusion = require_array(ck.classes, "confusion", npz)
    n_cls = len(ds.rec.class_names)
    return {
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


def _training(net: NetworkRecord, atlas: Sequence[CheckpointRef]) -> Figure | None:
    """Training curves, the atlas checkpoints marked (None: the network was not trained by sitegen)."""
    if not net.training:
        return None
    marks = [(c.epoch, c.name) for c in atlas if c.epoch is not None]
    t = net.training
    return Figure(
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


def _build_facts(m: CheckpointManifest) -> tuple[Fact, ...]:
    # Issue 14: provenance goes to the page's closing "Build" section, not its opening
    pv = m.provenance
    return (
        Fact("computed", fmt.date(pv.created) + " on " + pv.device),
        Fact("sitegen", pv.sitegen_version),
        Fact("torch", pv.torch_version),
        Fact("seed", str(pv.seed)),
        Fact("checkpoint hash", pv.checkpoint_hash[:12]),
        Fact("probe fingerprint", pv.dataset_fingerprint[:12]),
    )


def _sections(
    ctx: PlanContext, ck: LoadedCheckpoint, ds: LoadedDataset, overall: np.ndarray
) -> tuple[Section, ...]:
    """The analysis sections of the network page."""
    m = ck.manifest
    npz = ck.dir / "classes.npz"
    shown = {lay: set(u) for lay, u in m.shown_units.items()}

    def unit_href(layer: str, unit: int) -> str:
        ok = layer in ck.layer_slugs and unit in shown.get(layer, ())
        return f"{ck.base}{ck.layer_slugs[layer]}/unit-{unit:04d}.html" if ok else ""

    return ck.sections.network(
        NetworkPage(
            page_root=page_root(f"{ck.base}index.html"),
            image=lambda i, size: ctx.image(ds, i, size),
            chips=ds.chips,
            class_names=ds.rec.class_names,
            input_size=ck.net.input_size,
            layers=m.layers,
            weighted={lay: require_array(ck.classes, f"{lay}/weighted", npz) for lay in m.layers},
            overall=overall,
            unit_href=unit_href,
        )
    )


def filters(ctx: PlanContext, ck: LoadedCheckpoint) -> Img | None:
    """The first layer's filter grid (None: the manifest has none), enlarged when small."""
    f = ck.manifest.filters
    if f is None:
        return None
    src = f"{ck.base}filters.png"
    ctx.files[src] = ck.dir / "filters.png"
    scale = max(1, min(8, 720 // max(1, f.cols * f.cell)))  # enlarge small grids, pixel-crisp
    return Img(
        src,
        f.cols * f.cell * scale,
        f.rows * f.cell * scale,
        f"{f.count} filters of {f.layer}, {f.cols} per row",
    )
