"""Page parts that several page kinds show: class picks and bias rows, breadcrumbs, timing bars."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sitegen.diff import top_bottom
from sitegen.render.views import fmt
from sitegen.render.views.context import LoadedCheckpoint, LoadedDataset, PlanContext, require_array
from sitegen.render.views.models import THUMB, TINY, Bar, BiasRow, ClassPick, Link


def picks(
    ctx: PlanContext,
    ds: LoadedDataset,
    weighted: np.ndarray,
    exemplars: np.ndarray | None,
) -> tuple[tuple[ClassPick, ...], tuple[ClassPick, ...]]:
    """Top-n and bottom-n classes of a weighted histogram (n = 5, fewer for tiny datasets)."""
    top, bottom = top_bottom(weighted)  # the same top/bottom classes as the diff pages compare
    total = float(weighted.sum()) or 1.0

    def pick(c: int) -> ClassPick:
        if exemplars is not None:
            idx = [int(i) for i in exemplars[c] if i >= 0]
        else:
            idx = list(ds.rec.samples[c][:3]) if c < len(ds.rec.samples) else []
        thumbs = tuple(ctx.image(ds, i, THUMB) for i in idx[:3])
        thumb = ctx.image(ds, idx[0], TINY) if idx else None
        return ClassPick(ds.chips[c], f"{100 * float(weighted[c]) / total:.1f}%", thumb, thumbs)

    return tuple(pick(c) for c in top), tuple(pick(c) for c in bottom)


def bias_rows(ctx: PlanContext, ck: LoadedCheckpoint, ds: LoadedDataset) -> tuple[BiasRow, ...]:
    """Each layer's top and bottom classes, then the network's overall ones."""
    rows = []
    for layer in ck.manifest.layers:
        w = require_array(ck.classes, f"{layer}/weighted", ck.dir / "classes.npz")
        ex = require_array(ck.classes, f"{layer}/exemplars", ck.dir / "classes.npz")
        top, bottom = picks(ctx, ds, w, ex)
        rows.append(BiasRow(layer, f"{ck.base}{ck.layer_slugs[layer]}/index.html", top, bottom))
    overall = require_array(ck.classes, "overall/weighted", ck.dir / "classes.npz")
    top, bottom = picks(ctx, ds, overall, None)
    rows.append(BiasRow("Overall", "", top, bottom))
    return tuple(rows)


def crumbs(ck: LoadedCheckpoint, *more: Link) -> list[Link]:
    """Breadcrumbs of a checkpoint's pages: the atlas, the network (@ checkpoint), then ``more``."""
    text = ck.net.name if ck.base.count("/") == 1 else f"{ck.net.name} @ {ck.name}"
    return [Link("index.html", "Atlas"), Link(f"{ck.base}index.html", text), *more]


def bars(timings: Mapping[str, float]) -> tuple[Bar, ...]:
    """Timing bars, the longest full width."""
    top = max(timings.values(), default=0.0) or 1.0
    return tuple(Bar(k, fmt.seconds(v), round(100 * v / top, 1)) for k, v in timings.items())
