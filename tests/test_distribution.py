"""Activation distributions and unit scores (issue 15, items 2 and 3): the math on hand-made
activations with known answers, the registry entry, run/save on a tiny context, and the layer and
unit page sections drawn from the fixture store."""

from __future__ import annotations

import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fixture_store import add_distribution, make_fixture_store

from sitegen.analyses import distribution
from sitegen.analyses.registry import REGISTRY, Context, names
from sitegen.mine import Activations, LayerTopK, Mined
from sitegen.models.types import LayerInfo
from sitegen.render import check_site, render_site
from sitegen.spec import AnalysesSpec, DistributionSpec
from sitegen.store import Store
from sitegen.store.formats import DistributionDoc

# --- the math ----------------------------------------------------------------------------------------


def test_selectivity_of_a_unit_firing_for_one_class_is_one() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    x = np.zeros((6, 3))
    x[:2, 0] = [2.0, 4.0]  # unit 0: class 0 only
    x[:, 1] = 1.0  # unit 1: every class alike
    x[:, 2] = [3, 3, 1, 1, 2, 2]  # unit 2: class means 3, 1, 2
    means = distribution.class_means(x, labels, 3)
    np.testing.assert_allclose(means[:, 0], [3, 0, 0])
    sel = distribution.selectivity(means)
    # unit 2: mu_max = 3, mu_-max = (1 + 2) / 2 = 1.5 -> 1.5 / 4.5
    np.testing.assert_allclose(sel, [1.0, 0.0, 1 / 3])
    assert distribution.selectivity(np.zeros((3, 1)))[0] == 0  # a dead unit: 0, not NaN


def test_class_means_leave_empty_classes_at_zero() -> None:
    means = distribution.class_means(np.array([[1.0], [3.0]]), np.array([0, 0]), 3)
    np.testing.assert_allclose(means[:, 0], [2, 0, 0])


def test_entropy_of_top_k_classes_in_bits() -> None:
    got = distribution.entropy(np.array([[1, 1, 1, 1], [0, 1, 2, 3], [0, 0, 1, 1], [2, -1, -1, -1]]))
    np.testing.assert_allclose(got, [0.0, 2.0, 1.0, 0.0])


def test_histograms_count_equal_width_bins_with_the_last_closed() -> None:
    x = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    got = distribution.histograms(x, 4, np.array([0.0, 0.0]), np.array([4.0, 5.0]))
    np.testing.assert_array_equal(got[0], [1, 1, 1, 1])  # 4.0 falls in the last bin
    np.testing.assert_array_equal(got[1], [0, 0, 0, 4])
    flat = distribution.histograms(np.zeros((3, 1)), 5, np.zeros(1), np.zeros(1))
    np.testing.assert_array_equal(flat[0], [3, 0, 0, 0, 0])  # hi == lo: all in the first bin


def test_interval_samples_are_equal_count_quantile_bins() -> None:
    values = np.arange(20, dtype=np.float64)[::-1].copy()  # image i has value 19 - i
    cand = np.ones(20, bool)
    cand[[0, 1]] = False  # e.g. the top-k images
    parts = distribution.interval_samples(values, cand, 3, 2)
    # 18 candidates sorted ascending: images 19..2, split 6/6/6; ranks floor((j + .5) * 6 / 2) = 1, 4
    assert [p.tolist() for p in parts] == [[18, 15], [12, 9], [6, 3]]
    # deterministic ties: image index ascending
    tie = distribution.interval_samples(np.ones(6), np.ones(6, bool), 1, 3)
    assert tie[0].tolist() == [1, 3, 5]
    # fewer candidates than intervals: empty intervals are dropped
    few = distribution.interval_samples(values, np.arange(20) < 2, 5, 3)
    assert [p.tolist() for p in few] == [[1], [0]]


def _scores(
    x: np.ndarray, kind: str = "conv", shown: tuple[int, ...] = (0, 1, 2)
) -> distribution.LayerScores:
    n, u = x.shape
    labels = np.arange(n) % 2
    top = np.argsort(-x, axis=0, kind="stable")[:2].T.copy()
    tl = labels[top]
    p = DistributionSpec(bins=4, intervals=2, per_interval=1)
    return distribution.layer_scores(x.astype(np.float16), kind, labels, 2, top, tl, list(shown), p)


def test_layer_scores_density_dead_and_not_rectified() -> None:
    x = np.zeros((10, 3))
    x[:5, 1] = np.arange(1, 6)  # fires on half the images
    x[:, 2] = 1.0
    s = _scores(x)
    assert s.rectified and s.density is not None and s.selectivity is not None
    np.testing.assert_allclose(s.density, [0.0, 0.5, 1.0])  # unit 0 is dead
    np.testing.assert_allclose(s.max, [0, 5, 1]) and np.testing.assert_allclose(s.mean, [0, 1.5, 1])
    assert s.counts[1].sum() == 10 and s.counts[0].tolist() == [10, 0, 0, 0]
    assert s.samples[0] == []  # a dead unit fires on nothing
    # unit 1 fires on images 0..4 (values 1..5); less its top-2 (4, 3): 0, 1, 2 -> intervals [0, 1], [2]
    assert [p.tolist() for p in s.samples[1]] == [[1], [2]]
    signed = _scores(x - 0.5, kind="linear")
    assert not signed.rectified and signed.density is None and signed.selectivity is None
    prob = _scores(x / 10 + 0.01, kind="prob")
    assert prob.rectified and prob.density is None and prob.selectivity is not None


def test_layer_scores_are_the_same_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.abs(np.random.default_rng(0).normal(size=(40, 7)))
    x[x < 0.5] = 0
    whole = _scores(x, shown=tuple(range(7)))
    monkeypatch.setattr(distribution, "_BLOCK", 40 * 2)  # two columns per block
    blocks = _scores(x, shown=tuple(range(7)))
    for f in ("density", "mean", "max", "selectivity", "entropy", "lo", "hi"):
        np.testing.assert_array_equal(getattr(whole, f), getattr(blocks, f), err_msg=f)
    for u in range(7):
        np.testing.assert_array_equal(whole.counts[u], blocks.counts[u])
        assert [p.tolist() for p in whole.samples[u]] == [p.tolist() for p in blocks.samples[u]]


# --- the registry entry, run and save ----------------------------------------------------------------


def test_registered_on_by_default_after_featvis() -> None:
    kind = REGISTRY["distribution"]
    assert kind.analysis() is distribution and kind.params is DistributionSpec is distribution.Params
    assert kind.doc is DistributionDoc and kind.enabled(AnalysesSpec())
    order = names()
    assert order.index("featvis") < order.index("distribution") < order.index("stroke")
    assert AnalysesSpec().activations.enabled


def _context(n: int, layers: tuple[LayerInfo, ...]) -> Context:
    pics = np.random.default_rng(1).integers(0, 255, (n, 80, 80, 3), np.uint8)
    return Context(
        loaded=SimpleNamespace(layers=layers),  # type: ignore[arg-type]
        network="tiny",
        image=lambda i: None,  # type: ignore[arg-type,return-value]
        picture=lambda i: pics[i],
        class_names=("a", "b"),
        labels=np.arange(n) % 2,
        shown={"c": [0, 1]},
        weighted={},
        device=None,  # type: ignore[arg-type]
        seed=0,
        problem=lambda loc, msg: msg,
    )


def test_run_and_save_from_an_activations_file(tmp_path: Path) -> None:
    n = 12
    x = np.zeros((n, 3), np.float16)
    x[::2, 0] = np.arange(1, 7)  # unit 0 fires for class 0 only
    x[:, 1] = 1
    np.save(tmp_path / "activations.npy", np.concatenate([x, np.full((n, 2), -1, np.float16)], axis=1))
    layers = (
        LayerInfo("c", "0", "conv", (3, 2, 2), 3, 1, 1, 0.0),
        LayerInfo("fc", "1", "linear", (2,), 2, 1, 1, 0.0),
    )
    acts = Activations(tmp_path / "activations.npy", {"c": 0, "fc": 3}, {"c": 3, "fc": 2})
    top = np.argsort(-x.astype(np.float32), axis=0, kind="stable")[:2].T
    empty = LayerTopK(
        np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int64), *(np.zeros((2, 2), np.int32),) * 2
    )
    mined = Mined(
        {"c": LayerTopK(np.zeros((3, 2), np.float32), top, *(np.zeros((3, 2), np.int32),) * 2), "fc": empty},
        np.arange(n) % 2,
        np.zeros((n, 5), np.int64),
        np.zeros((n, 5), np.float32),
        activations=acts,
    )
    ctx = _context(n, layers)
    result = distribution.run(ctx, mined, DistributionSpec())
    assert result is not None
    doc = distribution.save(ctx, result, tmp_path)
    c = doc.layers["c"]
    assert c.rectified and c.density == [0.5, 1.0, 0.0] and c.selectivity is not None
    assert c.selectivity[0] == 1.0 and c.selectivity[1] == 0.0
    assert set(c.units) == {"0", "1"} and sum(c.units["0"].counts) == n
    assert not doc.layers["fc"].rectified and doc.layers["fc"].density is None
    for i in doc.probe_images():  # thumbnails of every sampled image, at most THUMB px
        png = tmp_path / doc.thumbs[str(i)]
        assert png.is_file()
    sampled = {i for part in c.units["0"].samples for i in part}
    assert sampled <= {int(i) for i in doc.thumbs} and not sampled & set(top[0].tolist())
    assert (
        distribution.run(
            ctx, Mined(mined.layers, mined.labels, mined.top5, mined.top5_prob), DistributionSpec()
        )
        is None
    )


# --- the sections ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist")
    store = add_distribution(make_fixture_store(root / "store", networks=("tiny-alex",)))
    render_site(store, root / "site")
    return root / "site"


def test_unit_page_shows_histogram_stats_and_interval_samples(site: Path) -> None:
    text = (site / "tiny-alex/conv2/unit-0002.html").read_text(encoding="utf-8")
    assert 'id="intervals"' in text and 'id="fig-activation"' in text and 'role="img"' in text
    assert "probe images by the unit&#39;s maximum per image" in text  # the chart's name
    assert "class selectivity" in text and "top-k entropy" in text and "density" in text
    thumbs = re.findall(r'src="\.\./\.\./tiny-alex/distribution/(\d+)\.png"', text)
    assert thumbs and all((site / f"tiny-alex/distribution/{i}.png").is_file() for i in thumbs)
    assert not check_site(site)


def test_layer_page_flags_dead_and_rare_units_and_carries_scores(site: Path) -> None:
    text = (site / "tiny-alex/conv2/index.html").read_text(encoding="utf-8")
    assert 'id="fig-density"' in text and 'href="#distribution"' in text
    assert re.search(r'class="uflag dead" href="unit-0000.html"', text)
    assert re.search(r'class="uflag rare" href="unit-0001.html"', text)
    assert 'data-flag="dead"' in text and 'option value="selectivity"' in text and 'id="tile-flag"' in text
    sel = [float(v) for v in re.findall(r'data-selectivity="([0-9.]+)"', text)]
    assert sel and all(0 <= v <= 1 for v in sel)
    prob = (site / "tiny-alex/prob/index.html").read_text(encoding="utf-8")
    assert 'id="fig-density"' not in prob and 'option value="selectivity"' in prob
    assert 'option value="density"' not in prob and 'data-density=""' in prob


def test_older_checkpoint_without_the_document_has_no_section(site: Path) -> None:
    text = (site / "tiny-alex/@epoch-1/conv2/index.html").read_text(encoding="utf-8")
    assert 'id="distribution"' not in text and 'option value="selectivity"' not in text


def test_thumbnail_sizes_and_the_store_document(site: Path) -> None:
    store = Store(site.parent / "store")
    doc = store.read_analysis("tiny-alex", "epoch-2", DistributionDoc)
    lay = doc.layers["conv2"]
    assert lay.density is not None and lay.density[0] == 0 and 0 < lay.density[1] < doc.rare
    u = lay.units["2"]
    assert len(u.counts) == doc.bins and sum(u.counts) == doc.images
    assert len(u.samples) == doc.intervals and all(len(s) <= doc.per_interval for s in u.samples)
    assert math.isclose(u.hi, lay.max[2], rel_tol=1e-3)
