"""Network similarity on the compare and diff pages (issue 15, item 6): CKA heatmaps, unit matching.

Draws what the build stored (``compare/<dataset>/cka.json``, the diff's ``cka`` and matching); computes
nothing beyond formatting. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sitegen.diff import StoreDiff
from sitegen.render import charts
from sitegen.render._models import Figure
from sitegen.store.formats import CkaDoc

__all__ = ["CkaSection", "CkaView", "MatchView", "compare_cka", "diff_cka", "diff_matching", "no_cosine"]

FEATURES = (
    "Linear CKA (Kornblith et al. 2019) between every layer of one network and every layer of the other, "
    "on the {n} probe images: 1 = the same representation up to rotation and scale, 0 = unrelated. "
    "A layer's features are its units' maxima on each image (the spatially max-pooled maps), not the "
    "full maps."
)


@dataclass(frozen=True, slots=True)
class CkaView:
    title: str  # "alexnet vs vgg"
    figure: Figure
    diagonal: str  # "mean CKA of same-named layers 0.83" ("" when no layer shares a name)


@dataclass(frozen=True, slots=True)
class CkaSection:
    views: tuple[CkaView, ...]
    note: str  # how it is computed, or why it is missing


@dataclass(frozen=True, slots=True)
class MatchView:
    """How a diff pairs units: its fact line and the page's sentence."""

    label: str  # "unit matching"
    value: str  # "Hungarian (by activation correlation)" | "by index"
    sentence: str


def _height(rows: int) -> int:
    return max(300, min(640, 120 + 36 * rows))


def _diagonal(m: np.ndarray, layers_a: Sequence[str], layers_b: Sequence[str]) -> str:
    pos = {n: j for j, n in enumerate(layers_b)}
    pairs = [(n, m[i, pos[n]]) for i, n in enumerate(layers_a) if n in pos and np.isfinite(m[i, pos[n]])]
    if not pairs:
        return ""
    mean = np.mean([v for _, v in pairs])
    if list(layers_a) == list(layers_b):
        return f"each layer with itself: mean CKA {mean:.2f}"
    names = ", ".join(n for n, _ in pairs) if len(pairs) <= 4 else f"{len(pairs)} layers"
    return f"same-named layers ({names}): mean CKA {mean:.2f}"


def _view(fig_id: str, cka: np.ndarray, la: Sequence[str], lb: Sequence[str], a: str, b: str) -> CkaView:
    rows = [[None if not np.isfinite(v) else float(v) for v in row] for row in cka]
    spec = charts.cka_heatmap(rows, la, lb, a, b, height=_height(len(la)))
    return CkaView(f"{a} vs {b}", Figure(fig_id, spec, _height(len(la))), _diagonal(cka, la, lb))


def compare_cka(doc: CkaDoc | None, refs: Sequence[str]) -> CkaSection:
    """The compare page's heatmaps: one per pair of the shown entries (``refs``, "net@checkpoint")."""
    if doc is None:
        return CkaSection((), "No CKA: the networks' per-image activations are not stored "
                          "(analyses.activations.enabled: false) or were not built.")
    shown = set(refs)
    views = []
    for i, p in enumerate(doc.pairs):
        if p.a not in shown or p.b not in shown:
            continue
        m = np.array([[np.nan if v is None else v for v in row] for row in p.cka], dtype=np.float64)
        views.append(_view(f"fig-cka-{i}", m, p.layers_a, p.layers_b, p.a.split("@")[0], p.b.split("@")[0]))
    note = FEATURES.format(n=f"{doc.images:,}")
    if not views:
        note = "No CKA for these checkpoints: rebuild to compute it."
    return CkaSection(tuple(views), note)


def diff_cka(d: StoreDiff, labels: Sequence[str]) -> CkaSection:
    """The diff page's heatmap of A's layers against B's."""
    if d.cka is None:
        return CkaSection((), "No CKA: a side has no per-image activations (analyses.activations).")
    names = [lay.name for lay in d.layers]
    n = f"{d.images:,}" if d.images else "same"
    view = _view("fig-diff-cka", d.cka, names, names, labels[0], labels[1])
    return CkaSection((view,), FEATURES.format(n=n).replace("one network", "one side"))


def no_cosine(d: StoreDiff) -> str:
    """Why a diff has no filter cosines."""
    if d.matching == "hungarian":
        return "not compared: units matched by correlation"
    return "not stored: no cosine"


def diff_matching(d: StoreDiff) -> MatchView:
    """Say how units are paired, with the mean correlation of the pairs (and the identity rate)."""
    rs = [lay.mean_match_r for lay in d.layers if lay.mean_match_r is not None]
    mean = f"{np.mean(rs):.2f}" if rs else "–"
    if d.matching == "hungarian":
        return MatchView(
            "unit matching",
            f"Hungarian, mean matched r = {mean}",
            "The sides are different networks or runs, so unit indices do not correspond: each layer's "
            "units are matched one-to-one by activation correlation (Hungarian assignment on Pearson r of "
            f"per-image maxima), mean matched r = {mean}. Every per-unit comparison below pairs A's unit "
            "with its match in B; filter cosines are not compared.",
        )
    ids = [lay.identity for lay in d.layers if lay.identity is not None]
    if not ids:
        one_run = "Checkpoints of one run: unit u is compared with unit u."
        return MatchView("unit matching", "by index", one_run)
    rate = f"{100 * np.mean(ids):.0f}%"
    return MatchView(
        "unit matching",
        f"by index (identity match {rate})",
        "Checkpoints of one run: unit u is compared with unit u (mean r of the pairs "
        f"{mean}); a Hungarian matching by activation correlation would pair {rate} of the units with "
        "themselves.",
    )
