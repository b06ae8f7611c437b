"""Layer and unit pages: activation distributions and unit scores (``distribution.json``, issue 15).

Unit pages: the histogram of the unit's per-image maxima, its density, mean, max, class selectivity
and top-k entropy, and images sampled from equal-count activation intervals. Layer pages: the
density distribution of the layer's units, its dead and rarely firing units, and the scores the
unit grid sorts and filters by (``layer.html`` reads :attr:`LayerView.scores` per tile).
"""

from __future__ import annotations

from dataclasses import dataclass

from sitegen.render import charts
from sitegen.render._models import Figure, Img
from sitegen.render.sections import Files, LayerPage, UnitPage
from sitegen.store.formats import DistributionDoc, DistributionLayer

TITLE = "Activation distribution"
TEMPLATE = "_distribution.html"
THUMB = 64  # CSS px of an interval sample


@dataclass(frozen=True, slots=True)
class Stat:
    label: str
    value: str
    hint: str


@dataclass(frozen=True, slots=True)
class Sample:
    index: int
    img: Img
    value: str


@dataclass(frozen=True, slots=True)
class Interval:
    label: str  # "interval 1 of 5 (lowest)"
    range: str  # "0.12 – 0.53"
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class UnitView:
    figure: Figure
    stats: tuple[Stat, ...]
    intervals: tuple[Interval, ...]
    images: int  # how many probe images the histogram counts
    note: str  # how the intervals are drawn


@dataclass(frozen=True, slots=True)
class Scores:
    """One unit's sortable scores: raw values for data attributes ("" when undefined)."""

    selectivity: str
    entropy: str
    density: str
    flag: str  # "dead" | "rare" | ""


@dataclass(frozen=True, slots=True)
class UnitLink:
    unit: int
    href: str  # "" without a page


@dataclass(frozen=True, slots=True)
class LayerView:
    figure: Figure | None  # density distribution (None: density undefined for this layer)
    scores: dict[int, Scores]
    dead: tuple[UnitLink, ...]
    rare: tuple[UnitLink, ...]
    rare_pct: str  # "1%"
    units: int
    note: str


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


def _flag(d: float | None, rare: float) -> str:
    if d is None:
        return ""
    return "dead" if d == 0 else "rare" if d < rare else ""


def scores(doc: DistributionDoc, lay: DistributionLayer) -> dict[int, Scores]:
    dens, sel = lay.density, lay.selectivity
    return {
        u: Scores(
            selectivity=_num(sel[u]) if sel is not None else "",
            entropy=_num(lay.entropy[u]),
            density=_num(dens[u]) if dens is not None else "",
            flag=_flag(dens[u] if dens is not None else None, doc.rare),
        )
        for u in range(len(lay.mean))
    }


def layer(doc: DistributionDoc, page: LayerPage, files: Files) -> LayerView | None:
    lay = doc.layers.get(page.layer)
    if lay is None:
        return None
    sc = scores(doc, lay)
    figure = None
    dead: tuple[UnitLink, ...] = ()
    rare: tuple[UnitLink, ...] = ()
    if lay.density is not None:
        figure = Figure("fig-density", charts.density_histogram(lay.density, rare=doc.rare), 280)
        dead = tuple(UnitLink(u, page.unit_href(u)) for u, s in sc.items() if s.flag == "dead")
        rare = tuple(UnitLink(u, page.unit_href(u)) for u, s in sc.items() if s.flag == "rare")
        note = (
            f"Density: the share of the {doc.images:,} probe images on which a unit's maximum exceeds "
            f"{doc.threshold:g}. Dead: never; rarely firing: on fewer than {doc.rare * 100:g}% of them."
        )
    else:
        note = (
            "This layer's values are not rectified (or are probabilities), so density is not defined; "
            "the grid still sorts by selectivity and entropy."
            if lay.selectivity is None or not lay.rectified
            else "A softmax is never 0, so density is not defined for prob; the grid sorts by selectivity."
        )
    return LayerView(figure, sc, dead, rare, f"{doc.rare * 100:g}%", len(lay.mean), note)


def unit(doc: DistributionDoc, page: UnitPage, files: Files) -> UnitView | None:
    lay = doc.layers.get(page.layer)
    e = lay.units.get(str(page.unit)) if lay is not None else None
    if lay is None or e is None:
        return None
    u = page.unit
    threshold = doc.threshold if lay.density is not None else None
    spec = charts.activation_histogram(e.lo, e.hi, e.counts, threshold=threshold)
    stats = [
        Stat("mean", f"{lay.mean[u]:.3g}", "mean over the probe images of the unit's maximum on each"),
        Stat("max", f"{lay.max[u]:.3g}", "its highest maximum (the rank-1 image)"),
    ]
    if lay.density is not None:
        d = lay.density[u]
        flag = _flag(d, doc.rare)
        value = f"{d * 100:.1f}%" + (f" ({flag})" if flag else "")
        stats.insert(
            0, Stat("density", value, f"share of images where its maximum exceeds {doc.threshold:g}")
        )
    if lay.selectivity is not None:
        hint = "Morcos et al. 2018: (μmax − μ−max) / (μmax + μ−max) over class means; 0: none, 1: one class"
        stats.append(Stat("class selectivity", f"{lay.selectivity[u]:.2f}", hint))
    hint = "of the classes of its top images; 0: one class"
    stats.append(Stat("top-k entropy", f"{lay.entropy[u]:.2f} bits", hint))
    intervals = []
    n = len(e.samples)
    for j, (imgs, vals, (lo, hi)) in enumerate(zip(e.samples, e.values, e.bounds, strict=True)):
        samples = []
        for idx, v in zip(imgs, vals, strict=True):
            rel = doc.thumbs.get(str(idx))
            if rel is None:
                raise ValueError(f"no thumbnail of probe image {idx}")
            src = files.file(rel, f"{files.base}distribution/{idx}.png")
            img = Img(src, THUMB, THUMB, f"probe image {idx}: maximum {v:.3g}")
            samples.append(Sample(idx, img, f"{v:.3g}"))
        which = " (lowest)" if j == 0 and n > 1 else " (highest)" if j == n - 1 and n > 1 else ""
        intervals.append(Interval(f"{j + 1} of {n}{which}", f"{lo:.3g} – {hi:.3g}", tuple(samples)))
    fires = "the images it fires on" if lay.density is not None else "all probe images"
    note = (
        f"{fires.capitalize()}, less its top images, in order of activation, cut into {doc.intervals} "
        f"intervals of equally many images (quantiles); {doc.per_interval} evenly spaced ones from each."
    )
    return UnitView(Figure("fig-activation", spec, 260), tuple(stats), tuple(intervals), doc.images, note)
