"""Issue 15, item 6 end to end: two runs of one architecture on one dataset, built by `sitegen build`.

The store gets ``compare/d/cka.json`` (CKA of every layer pair), the cross-run diff matches units by
correlation (Hungarian), and the pages show the heatmaps, the matching sentence and similar units.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sitegen.analyses.similarity import correlation_matrix, linear_cka
from sitegen.cli import app
from sitegen.compare import read_cka
from sitegen.diff import read_diff
from sitegen.store import Store
from sitegen.store.activations import stored_activations
from sitegen.store.formats import SimilarDoc

SPEC = """\
title: similarity
seed: 5
datasets:
  d:
    builtin: doodles
    classes: [circle, square, star, spiral]
    images_per_class: 16
    image_size: 32
networks:
  a:
    arch: zoo:alexnet_small
    dataset: d
    units: 4
    train: {epochs: 1, batch_size: 8}
  b:
    arch: zoo:alexnet_small
    dataset: d
    units: 4
    normalization: imagenet
    train: {epochs: 1, batch_size: 8}
analyses:
  top_k: 4
  reconstructions: {methods: [deconvnet]}
  activation_maps: {enabled: false}
  gradcam: {enabled: false}
  occlusion: {enabled: false}
  embedding: {enabled: false}
  invariance: {enabled: false}
  stroke: {enabled: false}
  similar: {k: 3}
diffs:
  - {a: a@epoch-1, b: b@epoch-1}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("similarity")
    (root / "experiments.yaml").write_text(textwrap.dedent(SPEC))
    result = CliRunner().invoke(app, ["build", str(root / "experiments.yaml"), "--check"])
    assert result.exit_code == 0, result.output
    return root


def _layers(store: Store, net: str) -> tuple[list[str], np.ndarray, dict[str, int], dict[str, int]]:
    acts = stored_activations(store.checkpoint_dir(net, "epoch-1"))
    assert acts is not None
    return store.read_manifest(net, "epoch-1").layers, np.asarray(acts.open()), acts.offsets, acts.units


def test_compare_cka_is_stored_and_equals_the_direct_formula(built: Path) -> None:
    store = Store(built / "output" / "store")
    doc = read_cka(store, "d")
    assert doc is not None and [(p.a, p.b) for p in doc.pairs] == [("a@epoch-1", "b@epoch-1")]
    (pair,) = doc.pairs
    la, xa, oa, ua = _layers(store, "a")
    lb, xb, ob, ub = _layers(store, "b")
    assert pair.layers_a == la and pair.layers_b == lb and doc.images == len(xa)
    for i, na in enumerate(la):
        for j, nb in enumerate(lb):
            fa, fb = xa[:, oa[na] : oa[na] + ua[na]], xb[:, ob[nb] : ob[nb] + ub[nb]]
            want = linear_cka(fa, fb)
            got = pair.cka[i][j]
            assert (got is None) == np.isnan(want)
            if got is not None:
                assert got == pytest.approx(want, abs=1e-4)  # stored rounded to 4 digits


def test_cross_run_diff_matches_units_by_correlation(built: Path) -> None:
    store = Store(built / "output" / "store")
    (ref,) = store.read_build().diffs
    d = read_diff(store, ref.name)
    assert d.matching == "hungarian" and d.cka is not None and d.images > 0
    _, xa, oa, ua = _layers(store, "a")
    _, xb, ob, ub = _layers(store, "b")
    mined_b = store.read_arrays("b", "epoch-1", "mined")
    mined_a = store.read_arrays("a", "epoch-1", "mined")
    for lay in d.layers:
        assert lay.match is not None and sorted(lay.match.tolist()) == list(range(lay.units))
        assert lay.cosine is None
        n = lay.name
        r, ca, cb = correlation_matrix(xa[:, oa[n] : oa[n] + ua[n]], xb[:, ob[n] : ob[n] + ub[n]])
        # the matching is optimal: no other permutation has a larger total (check against identity)
        total = r[np.arange(lay.units), lay.match].sum()
        assert total >= np.trace(r) - 1e-4
        # per-unit measures compare A's unit u with B's unit match[u]
        ia, ib = mined_a[f"{lay.name}/images"], mined_b[f"{lay.name}/images"][lay.match]
        shared = [len(set(x[x >= 0]) & set(y[y >= 0])) for x, y in zip(ia, ib, strict=True)]
        assert lay.overlap.tolist() == shared


def test_pages_show_cka_matching_and_similar_units(built: Path) -> None:
    site = built / "output" / "site"
    compare = (site / "compare" / "d.html").read_text()
    assert 'id="cka"' in compare and 'id="fig-cka-0-data"' in compare and "max-pooled" in compare
    store = Store(built / "output" / "store")
    (ref,) = store.read_build().diffs
    diff = (site / "diff" / ref.name / "index.html").read_text()
    assert 'id="fig-diff-cka-data"' in diff and "Hungarian" in diff and "mean matched r = " in diff
    doc = store.read_analysis("a", "epoch-1", SimilarDoc)
    m = store.read_manifest("a", "epoch-1")
    unit = m.shown_units["conv2"][0]
    e = doc.layers["conv2"].units[str(unit)]
    assert doc.layers["conv2"].next == "conv3" and len(e.same) == 3 and len(e.next) == 3
    page = (site / "a" / "conv2" / f"unit-{unit:04d}.html").read_text()
    assert 'id="similar"' in page
    linked = [p.unit for p in e.same if p.unit in m.shown_units["conv2"]]
    for u in linked:
        assert f'href="unit-{u:04d}.html"' in page
    assert re.search(r"r = -?\d\.\d\d", page)


def test_a_rebuild_keeps_the_cka_document(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    path = copy / "output" / "store" / "compare" / "d" / "cka.json"
    before = path.stat().st_mtime_ns
    result = CliRunner().invoke(app, ["build", str(copy / "experiments.yaml")])
    assert result.exit_code == 0, result.output
    assert path.stat().st_mtime_ns == before


@pytest.mark.browser
@pytest.mark.parametrize("width", [1920, 390])
def test_cka_heatmaps_draw_in_a_browser(built: Path, width: int, chromium) -> None:  # type: ignore[no-untyped-def]
    """The compare and diff pages draw their heatmaps from file:// without errors or overflow."""
    site = built / "output" / "site"
    (ref,) = Store(built / "output" / "store").read_build().diffs
    page = chromium.new_page(viewport={"width": width, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        for rel in ("compare/d.html", f"diff/{ref.name}/index.html"):
            page.goto((site / rel).as_uri())
            page.wait_for_selector("#cka .main-svg", timeout=15000)
            assert page.locator("#cka .heatmaplayer").count() == 1, rel
            el = "document.documentElement"
            over = page.evaluate(f"{el}.scrollWidth - {el}.clientWidth")
            assert over <= 0, (rel, over)
    finally:
        page.close()
    assert errors == []
