"""Compare pages (``compare/<dataset>.html``): the networks of one dataset side by side, each at its
network page's checkpoint: facts, layer biases, class preference, accuracy, training and CKA."""

from __future__ import annotations

from collections.abc import Sequence

from sitegen.compare import read_cka
from sitegen.render import charts, similarity
from sitegen.render._models import Figure
from sitegen.render.views import fmt
from sitegen.render.views.context import LoadedCheckpoint, LoadedDataset, PlanContext, require_array
from sitegen.render.views.models import CompareColumn, Fact, Link
from sitegen.render.views.pieces import bias_rows


def compare_page(ctx: PlanContext, ds: LoadedDataset, cks: Sequence[LoadedCheckpoint]) -> None:
    """Plan the compare page of dataset ``ds`` over the checkpoints ``cks`` (two or more)."""
    cols = []
    for ck in cks:
        net = ck.net
        facts = (
            Fact("architecture", net.arch),
            Fact("checkpoint", ck.name),
            Fact("probe accuracy", fmt.pct(ck.manifest.accuracy)),
            Fact("parameters", fmt.count(net.params)),
            Fact("layers", str(len(ck.manifest.layers))),
        )
        cols.append(CompareColumn(net.name, f"{ck.base}index.html", facts, bias_rows(ctx, ck, ds)))
    shares = [require_array(c.classes, "overall/weighted", c.dir / "classes.npz") for c in cks]
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
    ctx.page(
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
            read_cka(ctx.store, ds.rec.name), [f"{c.net.name}@{c.name}" for c in cks]
        ),
    )
