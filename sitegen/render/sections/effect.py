"""Unit and layer pages: what a unit does to the prediction (``effect.json``, issue 15 item 5).

Unit pages of the layer feeding the classifier show the unit's direct effect, the classifier's
weight ``W[c, j]`` (logit change per unit of activation) of its top and bottom classes, beside
``W[c, j]`` times its mean activation (its mean contribution to that logit). Unit pages of ablated
layers show what zeroing the unit does (Bau et al. 2020): the accuracy change on the probe subset and
the classes whose true-class logit drops most. Layer pages list the units with the largest effects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sitegen.render import charts
from sitegen.render._models import Chip
from sitegen.render.sections import Files, LayerPage, UnitPage
from sitegen.store.formats import AblationLayer, DirectEffect, EffectDoc

TITLE = "What units do"
TEMPLATE = "_effect.html"
LAYER_ROWS = 10  # units listed on a layer page

_POOLING = {
    "none": "its value is the classifier's input",
    "mean": "the classifier reads its spatial mean (global average pooling)",
    "max": "the classifier reads its spatial maximum (global max pooling)",
}


@dataclass(frozen=True, slots=True)
class Row:
    chip: Chip
    pct: float  # bar width, 0..100, of |value| against the largest shown
    value: str  # the bar's number
    extra: str  # the second column
    third: str  # the third column ("" when none)
    negative: bool


@dataclass(frozen=True, slots=True)
class Table:
    caption: str
    heads: tuple[str, ...]  # column titles after the class and the bar
    rows: tuple[Row, ...]
    empty: str = ""  # shown when there is no row


@dataclass(frozen=True, slots=True)
class Part:
    title: str
    lead: str  # one line of figures
    tables: tuple[Table, ...]
    note: str


@dataclass(frozen=True, slots=True)
class UnitView:
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class LayerRow:
    unit: int
    href: str
    chip: Chip
    cells: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LayerView:
    title: str
    heads: tuple[str, ...]
    rows: tuple[LayerRow, ...]
    note: str
    scores: dict[int, str]  # unit -> the grid's sort key (layer.html: data-effect; "" none)
    sort_label: str  # its option in the grid's sort menu


def _chip(chips: Sequence[Chip], c: int) -> Chip:
    return chips[c] if 0 <= c < len(chips) else Chip(c, f"output {c}", charts.class_color(c))


def _signed(v: float, digits: int = 3) -> str:
    return f"{v:+.{digits}g}".replace("-", "−")


def _pp(v: float) -> str:
    return _signed(100 * v, 3) + " pp"


def _direct_part(d: DirectEffect, u: int, chips: Sequence[Chip]) -> Part:
    mean = d.mean[u]
    top = list(zip(d.top[u], d.top_w[u], strict=True))
    bottom = list(zip(d.bottom[u], d.bottom_w[u], strict=True))
    peak = max([abs(w) for _, w in top + bottom] + [1e-12])
    heads = ("W", "W × mean")

    def rows(items: list[tuple[int, float]]) -> tuple[Row, ...]:
        return tuple(
            Row(_chip(chips, c), round(100 * abs(w) / peak, 1), _signed(w), _signed(w * mean), "", w < 0)
            for c, w in items
        )

    where = "probe images" if d.mean_source == "activations" else "probe images of the ablation subset"
    lead = (
        f"mean activation {mean:.3g} over {d.mean_images:,} {where}; largest mean logit contribution "
        f"{_signed(d.contribution[u])}"
    )
    note = (
        f"Direct effect: the classifier's weight W[c, j] ({d.head}) is the change of class c's logit per "
        f"unit of this unit's activation ({_POOLING[d.pooling]}); W × mean is its mean contribution to "
        "that logit over the probe set. Bars: |W|, against the largest shown."
    )
    # only positive weights raise a logit and only negative ones lower it (with few classes the
    # top and bottom lists would otherwise share classes)
    tables = (
        Table("raises these logits most", heads, rows([t for t in top if t[1] > 0]), "no positive weight"),
        Table("lowers these logits most", heads, rows([b for b in bottom if b[1] < 0]), "no negative weight"),
    )
    return Part("Direct effect on the class logits", lead, tables, note)


def _ablation_part(a: AblationLayer, i: int, chips: Sequence[Chip]) -> Part:
    acc = a.accuracy[i]
    peak = max([abs(v) for v in a.drops[i]] + [1e-12])
    rows = tuple(
        Row(
            _chip(chips, c),
            round(100 * abs(v) / peak, 1),
            _signed(-v),
            _pp(dacc),
            str(a.class_images[c]) if 0 <= c < len(a.class_images) else "",
            v > 0,
        )
        for c, v, dacc in zip(a.classes[i], a.drops[i], a.class_accuracy[i], strict=True)
    )
    lead = (
        f"accuracy {100 * a.base_accuracy:.1f}% → {100 * acc:.1f}% ({_pp(acc - a.base_accuracy)}); "
        f"mean true-class logit {_signed(-a.logit_drop[i])} on {a.images:,} probe images"
    )
    note = (
        "Ablation (Bau et al. 2020): the unit's output set to 0 on every image, the network run from "
        "this layer on. Logit: the change of the mean true-class logit over the class's images; bars: "
        "the size of the drop, against the largest shown. Few images per class make these noisy."
    )
    heads = ("Δ logit", "Δ acc.", "images")
    table = Table("classes hurt most when it is zeroed", heads, rows, "no class")
    return Part("Ablation: zeroing this unit", lead, (table,), note)


def unit(doc: EffectDoc, page: UnitPage, files: Files) -> UnitView | None:
    parts = []
    d = doc.direct
    if d is not None and d.layer == page.layer and 0 <= page.unit < len(d.mean):
        parts.append(_direct_part(d, page.unit, page.chips))
    a = doc.ablation.get(page.layer)
    if a is not None and page.unit in a.units:
        parts.append(_ablation_part(a, a.units.index(page.unit), page.chips))
    return UnitView(tuple(parts)) if parts else None


def layer(doc: EffectDoc, page: LayerPage, files: Files) -> LayerView | None:
    chips = [Chip(i, n, charts.class_color(i)) for i, n in enumerate(page.class_names)]
    d = doc.direct
    if d is not None and d.layer == page.layer:
        order = sorted(range(len(d.mean)), key=lambda u: (-d.contribution[u], u))[:LAYER_ROWS]
        rows = tuple(
            LayerRow(
                u,
                page.unit_href(u),
                _chip(chips, d.top[u][0]),
                (_signed(d.contribution[u]), _signed(d.top_w[u][0]), f"{d.mean[u]:.3g}"),
            )
            for u in order
        )
        note = (
            f"The {len(d.mean):,} units feed the classifier ({d.head}); units ranked by their largest mean "
            "logit contribution, max over classes of W[c, j] × mean activation (a large weight on a unit "
            "that rarely fires does little; the unit grid sorts by it too). Class: the one it raises most."
        )
        heads: tuple[str, ...] = ("W × mean", "W", "mean")
        scores = {u: f"{v:.4g}" for u, v in enumerate(d.contribution)}
        title = "Largest direct effects on the class logits"
        return LayerView(title, heads, rows, note, scores, "direct effect, high first")
    a = doc.ablation.get(page.layer)
    if a is None or not a.units:
        return None
    order = sorted(range(len(a.units)), key=lambda i: (a.accuracy[i], -a.logit_drop[i], a.units[i]))
    rows = tuple(
        LayerRow(
            a.units[i],
            page.unit_href(a.units[i]),
            _chip(chips, a.classes[i][0]) if a.classes[i] else Chip(-1, "–", "#999"),
            (_pp(a.accuracy[i] - a.base_accuracy), _signed(-a.logit_drop[i])),
        )
        for i in order[:LAYER_ROWS]
    )
    note = (
        f"Each of the {len(a.units):,} shown units zeroed in turn (Bau et al. 2020) on {a.images:,} probe "
        f"images (intact accuracy {100 * a.base_accuracy:.1f}%); ranked by the accuracy it costs (the unit "
        "grid sorts by its mean true-class logit drop). Class: the one whose true-class logit drops most."
    )
    heads = ("Δ accuracy", "Δ true-class logit")
    scores = {u: f"{v:.4g}" for u, v in zip(a.units, a.logit_drop, strict=True)}
    label = "ablation effect, high first"
    return LayerView("Units whose ablation costs most", heads, rows, note, scores, label)
