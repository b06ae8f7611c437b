"""Diff (issue 6.1) and feature evolution (issue 6.2): exact measures, errors, the store round trip, pages.

The fixture's epochs differ by a rule (tests/fixture_store.py, ``evolve_topk``): from epoch-1 to epoch-2,
odd units swap ranks 1 and 2 and unit ``u`` replaces its last ``u % 3`` top-9 images by the
smallest-index probe images not in its list; filter weights of unit ``u`` turn by ``u * 7.5°``. So every
expected number below is derived by hand from that rule, not by re-running the diff's code.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fixture_store import TURN_DEGREES, XSS_CLASS, make_fixture_store

from sitegen.diff import (
    DiffSide,
    add_diff,
    diff_name,
    diff_stores,
    is_folder_ref,
    preference_distances,
    rank_biased_overlap,
    read_diff,
    resolve_side,
    top_bottom,
    topk_overlap,
    write_diff,
)
from sitegen.errors import DiffError
from sitegen.render import check_site, render_site
from sitegen.render.charts import plotly_text
from sitegen.store import Store, codecs

K = 9
NAME = "tiny-alex@epoch-1--tiny-alex@epoch-2"
XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"

# RBO (p = 0.9, k = 9) of epoch-1 vs epoch-2 for unit u, by u % 6 (s = u % 3 tail images replaced,
# swap = u odd). RBO = Σ_d w_d X_d with w_d = (1-p)/p p^d / d (+ p^k / k at d = k), so each shortfall
# of X_d (shared images in the top-d prefixes) against d costs w_d times the shortfall:
#   swap of ranks 1, 2: X_1 = 0 instead of 1              → costs w_1 = 1 - p
#   s = 1: X_9 = 8                                         → costs w_9 = p^9 (1-p)/p / 9 + p^9 / 9 = p^8 / 9
#   s = 2: X_8 = 7, X_9 = 7                                → costs w_8 + 2 w_9 = (1-p) p^7 / 8 + 2 p^8 / 9
_P = 0.9
_SWAP, _S1, _S2 = 1 - _P, _P**8 / 9, (1 - _P) * _P**7 / 8 + 2 * _P**8 / 9
RBO_BY_U6 = (1.0, 1 - _SWAP - _S1, 1 - _S2, 1 - _SWAP, 1 - _S1, 1 - _SWAP - _S2)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_store(tmp_path_factory.mktemp("diff") / "store", xss=True, diff=True)


@pytest.fixture(scope="module")
def site(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("diff-out") / "site"
    render_site(store, site)
    return site


def side(root: Path, checkpoint: str, network: str = "tiny-alex") -> DiffSide:
    return DiffSide(root, network, checkpoint)


def one_line(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


# --- the measures -----------------------------------------------------------------------------------


def test_self_diff_is_the_identity(store: Path) -> None:
    d = diff_stores(side(store, "epoch-1"), side(store, "epoch-1"))
    assert [lay.name for lay in d.layers] == ["conv1", "conv2", "fc6", "prob"]
    assert d.top_k == K and d.accuracy_change == 0.0
    for lay in d.layers:
        assert (lay.overlap == K).all(), lay.name
        np.testing.assert_allclose(lay.rbo, 1.0, rtol=0, atol=1e-12)
        assert lay.l1 == 0.0 and lay.js == 0.0, lay.name
        assert (lay.purity_a == lay.purity_b).all() and lay.dominant_changed == 0.0
        assert lay.entered_top == lay.left_top == lay.entered_bottom == lay.left_bottom == ()
        if lay.name == "prob":
            assert lay.cosine is None  # no weights for prob: the column is omitted, not faked
        else:
            np.testing.assert_allclose(lay.cosine, 1.0, atol=1e-6)


def test_two_epochs_have_the_hand_derived_values(store: Path) -> None:
    d = diff_stores(side(store, "epoch-1"), side(store, "epoch-2"))
    assert d.accuracy_a == 0.55 and d.accuracy_b == 0.78
    assert d.accuracy_change == pytest.approx(0.23, abs=1e-12)
    units = {"conv1": 8, "conv2": 12, "fc6": 16, "prob": 6}
    for lay in d.layers:
        u = np.arange(units[lay.name])
        assert lay.overlap.tolist() == (K - u % 3).tolist(), lay.name
        np.testing.assert_allclose(lay.rbo, [RBO_BY_U6[i % 6] for i in u], rtol=0, atol=1e-12)
        if lay.name != "prob":
            np.testing.assert_allclose(lay.cosine, np.cos(np.radians(u * TURN_DEGREES)), atol=1e-5)
    # Mean overlap: conv1 = (9+8+7)·2 + 9+8 over 8 units; fc6 = 5 cycles of 24 + 9 over 16.
    assert [lay.mean_overlap for lay in d.layers] == [65 / 8, 8.0, 129 / 16, 8.0]

    # prob is fully determined: unit u lists the 8 images of class u (ranks 1-8, weights 9..2 = 44)
    # and one of class u+1 (rank 9, weight 1), so epoch-1 prefers every class equally (45 each).
    # In epoch-2 the replaced tail images are images 0, 1, 2 (class 0): u1 rank 9, u2 ranks 8-9,
    # u4 rank 9, u5 ranks 8-9 turn into class 0 →
    #   class 0: 44 + 1 (u1) + 3 (u2) + 1 (u4) + 3 (u5, whose old rank 9 was class 0 already) = 52
    #   class 1: 44 + 1 (u0)                       = 45    class 2: 42 (ranks 1-7) + 0 = 42
    #   class 3: 44 + 0 (u2's rank 9 replaced)     = 44    class 4: 44 + 1 (u3)       = 45
    #   class 5: 42 + 0 (u4's rank 9 replaced)     = 42    total 270 = 6 · 45
    prob = d.layer("prob")
    assert prob.weighted_a.tolist() == [45.0] * 6
    assert prob.weighted_b.tolist() == [52.0, 45.0, 42.0, 44.0, 45.0, 42.0]
    assert prob.l1 == pytest.approx((7 + 0 + 3 + 1 + 0 + 3) / 270, abs=1e-15)
    p = [1 / 6] * 6
    q = [w / 270 for w in (52, 45, 42, 44, 45, 42)]
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    jsd = 0.5 * sum(a * math.log2(a / c) for a, c in zip(p, m, strict=True)) + 0.5 * sum(
        b * math.log2(b / c) for b, c in zip(q, m, strict=True)
    )
    assert prob.js == pytest.approx(math.sqrt(jsd), abs=1e-12)
    # Top/bottom 3 (6 classes): epoch-1 ties → index order; epoch-2: 52, 45 (c1), 45 (c4), 44, 42, 42.
    assert (prob.top_a, prob.bottom_a) == ((0, 1, 2), (5, 4, 3))
    assert (prob.top_b, prob.bottom_b) == ((0, 1, 4), (5, 2, 3))
    assert (prob.entered_top, prob.left_top) == ((4,), (2,))
    assert (prob.entered_bottom, prob.left_bottom) == ((2,), (4,))
    # Units 2 and 5 trade one own-class image (rank 8) for class 0: purity 8/9 → 7/9, dominant kept.
    np.testing.assert_allclose(prob.purity_b - prob.purity_a, [0, 0, -1 / 9, 0, 0, -1 / 9], atol=1e-6)
    assert prob.dominant_a.tolist() == prob.dominant_b.tolist() == list(range(6))


def test_small_cases_of_each_measure() -> None:
    a = np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3], [4, 7, -1]])
    b = np.array([[1, 2, 3], [3, 2, 1], [4, 5, 6], [7, -1, -1]])
    assert topk_overlap(a, b).tolist() == [3, 3, 0, 1]
    # RBO by hand (p = 0.9, k = 3; weights w = (0.1, 0.045, 0.027 + 0.243) of X_1, X_2, X_3):
    #   identical → 1; reversed: X = (0, 1, 3) → 0.045 + 0.81 = 0.855; disjoint → 0;
    #   padded (4, 7, -) vs (7, -, -): X = (0, 1, 1) → 0.045 + 0.27 = 0.315 (-1 is never shared)
    np.testing.assert_allclose(rank_biased_overlap(a, b), [1.0, 0.855, 0.0, 0.315], atol=1e-12)
    # Webber et al.'s swap example: only X_1 differs → p; the same list, one image off at the end
    np.testing.assert_allclose(rank_biased_overlap(np.array([[1, 2, 3]]), np.array([[2, 1, 3]])), [0.9])
    np.testing.assert_allclose(rank_biased_overlap(np.array([[1, 2, 3]]), np.array([[1, 4, 5]])), [0.415])
    assert rank_biased_overlap(np.array([[5]]), np.array([[5]])).tolist() == [1.0]
    # A smaller p looks more at the top: (1, 2) vs (1, 3), p = 0.5: w = (0.5, 0.125 + 0.125), X = (1, 1)
    np.testing.assert_allclose(rank_biased_overlap(np.array([[1, 2]]), np.array([[1, 3]]), p=0.5), [0.75])
    with pytest.raises(ValueError):
        rank_biased_overlap(a, b, p=1.0)
    # Against the definition, term by term, on random lists
    rng = np.random.default_rng(0)
    ra = np.array([rng.permutation(20)[:9] for _ in range(50)])
    rb = np.array([rng.permutation(20)[:9] for _ in range(50)])
    ref = [
        sum(len(set(x[:d]) & set(y[:d])) / d * 0.9**d for d in range(1, 10)) * 0.1 / 0.9
        + len(set(x) & set(y)) / 9 * 0.9**9
        for x, y in zip(ra.tolist(), rb.tolist(), strict=True)
    ]
    np.testing.assert_allclose(rank_biased_overlap(ra, rb), ref, rtol=0, atol=1e-12)
    assert preference_distances(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == (2.0, 1.0)
    assert preference_distances(np.array([3.0, 1.0]), np.array([6.0, 2.0])) == (0.0, 0.0)
    assert preference_distances(np.zeros(2), np.array([1.0, 1.0])) == (0.0, 0.0)  # empty → uniform
    assert top_bottom(np.array([1.0, 5.0, 5.0, 0.0, 2.0])) == ((1, 2), (3, 0))
    with pytest.raises(ValueError):
        topk_overlap(np.zeros((2, 3)), np.zeros((2, 4)))


# --- errors -----------------------------------------------------------------------------------------


def test_different_probe_sets_are_refused(store: Path, tmp_path: Path) -> None:
    other = Store(tmp_path / "other")
    shutil.copytree(store, other.root)
    other.write_dataset(other.read_dataset("shapes").model_copy(update={"fingerprint": "9f8e7d6c5b4a3928"}))
    with pytest.raises(DiffError) as exc:
        diff_stores(side(store, "epoch-1"), side(other.root, "epoch-2"))
    one_line(exc, "probe sets differ", "f1f2f3f4f5f6…", "9f8e7d6c5b4a…", "same data")


def test_different_layer_tables_are_refused(store: Path, tmp_path: Path) -> None:
    other = make_fixture_store(tmp_path / "other", n_units={"conv2": 10}, networks=("tiny-vgg",))
    with pytest.raises(DiffError) as exc:
        diff_stores(side(store, "epoch-1"), side(other, "final", "tiny-vgg"))
    one_line(exc, "layer tables differ", "conv2 12 vs 10 units")
    # Same table, other network: comparable (the networks share the probe set and the layer table).
    assert diff_stores(side(store, "epoch-2"), side(store, "final", "tiny-vgg")).layers


def test_unknown_network_or_checkpoint_is_one_line(store: Path) -> None:
    with pytest.raises(DiffError) as exc:
        diff_stores(side(store, "epoch-9"), side(store, "epoch-2"))
    one_line(exc, "no store entry for checkpoint 'epoch-9'", "['epoch-1', 'epoch-2']")
    with pytest.raises(DiffError) as exc2:
        diff_stores(side(store, "final", "tiny-vg"), side(store, "epoch-2"))
    one_line(exc2, "no network 'tiny-vg'", "tiny-vgg")


# --- the store ------------------------------------------------------------------------------------


def test_write_read_round_trip(store: Path, tmp_path: Path) -> None:
    d = diff_stores(side(store, "epoch-1"), side(store, "epoch-2"))
    target = Store(tmp_path / "elsewhere")
    write_diff(target, NAME, d)
    folder = target.root / "diffs" / NAME
    assert sorted(p.name for p in folder.iterdir()) == ["diff.json", "diff.npz"]  # no temp files
    doc = codecs.read_json(folder / "diff.json")
    assert doc["format"] == 2 and doc["matching"] == "index" and doc["weights"] is True and doc["top_k"] == K
    # The sides live in another store: recorded relative to this one, resolved back on reading.
    assert doc["a"]["store"] != "." and not doc["a"]["store"].startswith("/")
    assert doc["layers"][3]["top"] == {"a": [0, 1, 2], "b": [0, 1, 4], "entered": [4], "left": [2]}
    back = read_diff(target, NAME)
    assert back.a.ref == "tiny-alex@epoch-1" and back.b.ref == "tiny-alex@epoch-2"
    assert Path(back.a.store_root).resolve() == store.resolve()
    assert (back.class_names, back.fingerprint, back.top_k) == (d.class_names, d.fingerprint, d.top_k)
    assert (back.accuracy_a, back.accuracy_b) == (d.accuracy_a, d.accuracy_b)
    for x, y in zip(d.layers, back.layers, strict=True):
        for field in ("overlap", "rbo", "purity_a", "purity_b", "dominant_a", "dominant_b", "cosine"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
        assert (x.l1, x.js, x.top_a, x.top_b, x.bottom_a, x.bottom_b) == (
            y.l1,
            y.js,
            y.top_a,
            y.top_b,
            y.bottom_a,
            y.bottom_b,
        )
    # Without weights.npz on a side, no cosine column anywhere.
    nw = diff_stores(side(store, "final", "tiny-vgg"), side(store, "final", "tiny-vgg"))
    write_diff(target, "vgg", nw)
    assert not any(k.endswith("/cosine") for k in codecs.read_npz(target.root / "diffs/vgg/diff.npz"))
    assert read_diff(target, "vgg").has_weights is False
    with pytest.raises(DiffError):
        write_diff(target, "../escape", nw)


def test_diff_name_is_a_safe_folder_name(tmp_path: Path) -> None:
    a, b = DiffSide(tmp_path, "tiny alex", "epoch 1"), DiffSide(tmp_path, "tiny alex", "epoch/2")
    assert diff_name(a, b) == "tiny-alex@epoch-1--tiny-alex@epoch-2"


# --- pages ------------------------------------------------------------------------------------------


def test_diff_and_evolution_pages_resolve_every_link(site: Path) -> None:
    problems = check_site(site)
    assert not problems, "\n".join(map(str, problems))
    for rel in (
        f"diff/{NAME}/index.html",
        "tiny-alex/evolution/index.html",
        "tiny-alex/evolution/conv1.html",
        "tiny-alex/evolution/prob.html",
    ):
        assert (site / rel).is_file(), rel
    assert not (site / "tiny-vgg/evolution").exists()  # one checkpoint: nothing evolves


def test_diff_page_content(site: Path) -> None:
    text = (site / f"diff/{NAME}/index.html").read_text(encoding="utf-8")
    # Unit pages of both atlases (epoch-1 lives under @epoch-1, the last atlas checkpoint at the top).
    assert 'href="../../tiny-alex/@epoch-1/conv1/unit-0005.html"' in text
    assert 'href="../../tiny-alex/conv1/unit-0005.html"' in text
    assert 'src="../../tiny-alex/@epoch-1/conv1/unit-0005.webp"' in text
    assert set(re.findall(r'data-figure="([^"]+)-data"', text)) == {"fig-diff-overlap", "fig-diff-pref-0"}
    assert len(re.findall(r'<option value="fig-diff-pref-\d-data"', text)) == 4
    assert "<img src=x" not in text and XSS_ESCAPED in text
    pref = json.loads(_group(r'id="fig-diff-pref-3-data"[^>]*>(.*?)</script>', text))
    assert plotly_text(XSS_CLASS) in pref["data"][0]["x"]
    # Most changed of conv1 (overlap 7 first, then by RBO): 5 (swap too), 2, then 1 and 7 (same RBO).
    conv1 = _group(r'id="layer-0"(.*?)</section>', text)
    most = _group(r"Most changed(.*?)Least changed", conv1)
    assert re.findall(r'class="uid">#(\d+)', most) == ["0005", "0002", "0001", "0007"]
    assert "filter cosine" in text
    # The hint says what RBO means, its p and its scale (issue 14: a rank correlation read -0.6)
    assert "rank-biased overlap (Webber et al. 2010, p&nbsp;=&nbsp;0.9)" in text
    assert "1&nbsp;= the same images in the same order, 0&nbsp;= no image in common" in text
    fig = json.loads(_group(r'id="fig-diff-overlap-data">(.*?)</script>', text))
    assert fig["layout"]["yaxis2"]["title"]["text"] == "rank-biased overlap (0..1)"
    assert all(0 <= v <= 1 for v in fig["data"][1]["y"])
    index = (site / "index.html").read_text(encoding="utf-8")
    assert f'href="diff/{NAME}/index.html"' in index and "tiny-alex@epoch-1 → tiny-alex@epoch-2" in index


def test_evolution_pages_content(site: Path) -> None:
    index = (site / "tiny-alex/evolution/index.html").read_text(encoding="utf-8")
    assert 'data-figure="fig-stability-data"' in index
    fig = json.loads(_group(r'id="fig-stability-data">(.*?)</script>', index))
    # Mean overlap with the final epoch: epoch-1 = the diff's mean overlap, epoch-2 = 9 (itself).
    assert [t["y"] for t in fig["data"]] == [[8.125, 9.0], [8.0, 9.0], [8.062, 9.0], [8.0, 9.0]]
    conv2 = (site / "tiny-alex/evolution/conv2.html").read_text(encoding="utf-8")
    assert len(re.findall(r'class="evo-unit"', conv2)) == 12
    # Rank-1 patch and deconvnet cells of each checkpoint's sprite (3x3 cells, 2 panels).
    assert "background-size:600% 300%;background-position:0% 0%" in conv2
    assert "background-size:600% 300%;background-position:60% 0%" in conv2
    assert "url('../../tiny-alex/@epoch-1/conv2/unit-0005.webp')" in conv2
    assert "url('../../tiny-alex/conv2/unit-0005.webp')" in conv2
    assert re.findall(r'class="evo-ov">(\d/9)', conv2)[:3] == ["9/9", "8/9", "7/9"]
    net = (site / "tiny-alex/index.html").read_text(encoding="utf-8")
    assert 'href="evolution/index.html"' in net and f'href="../diff/{NAME}/index.html"' in net
    layer = (site / "tiny-alex/conv2/index.html").read_text(encoding="utf-8")
    assert 'href="../../tiny-alex/evolution/conv2.html"' in layer


def test_evolution_reads_checkpoints_without_atlas_pages(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store", networks=("tiny-alex",), epochs=3)
    site = tmp_path / "site"
    render_site(store, site)
    assert not check_site(site)
    assert not (site / "tiny-alex/@epoch-2").exists()  # epoch-2: a store entry, no atlas pages
    page = (site / "tiny-alex/evolution/conv2.html").read_text(encoding="utf-8")
    assert "url('sprites/epoch-2/conv2/unit-0000.webp')" in page
    assert (site / "tiny-alex/evolution/sprites/epoch-2/conv2/unit-0000.webp").is_file()
    fig = json.loads(
        _group(
            r'id="fig-stability-data">(.*?)</script>', (site / "tiny-alex/evolution/index.html").read_text()
        )
    )
    assert fig["data"][1]["x"] == [1, 2, 3] and fig["data"][1]["y"][1:] == [8.0, 9.0]


def test_cross_store_diff_from_two_output_folders(tmp_path: Path) -> None:
    run_a, run_b = tmp_path / "runA", tmp_path / "runB"
    make_fixture_store(run_a / "store", networks=("tiny-alex",))
    make_fixture_store(run_b / "store", networks=("tiny-alex",))
    result = add_diff(f"{run_a}:tiny-alex@epoch-1", str(run_b))  # B: its one network, last entry
    assert result.name == NAME and result.site_dir == run_b / "site"
    assert "mean top-9 overlap 8.05, accuracy +23.0 pp" in result.summary
    build = Store(run_b / "store").read_build()
    assert [(r.a, r.b, r.name) for r in build.diffs] == [("tiny-alex@epoch-1", "tiny-alex@epoch-2", NAME)]
    render_site(result.store_root, result.site_dir)
    assert not check_site(result.site_dir)
    page = (result.site_dir / f"diff/{NAME}/index.html").read_text(encoding="utf-8")
    assert 'src="a/conv1/unit-0005.webp"' in page  # A's sprites copied beside the page: no atlas here
    assert "tiny-alex/@epoch-1/conv1/unit-0005.html" not in page
    assert 'href="../../tiny-alex/conv1/unit-0005.html"' in page
    # A's store moved away: the numbers stay, A's sprites go, nothing breaks.
    shutil.rmtree(run_a)
    render_site(result.store_root, result.site_dir)
    assert not check_site(result.site_dir)
    assert "is gone: no sprites" in (result.site_dir / f"diff/{NAME}/index.html").read_text(encoding="utf-8")


def test_resolve_side_forms_and_errors(store: Path, tmp_path: Path) -> None:
    assert resolve_side("tiny-alex@epoch-1", store_root=store) == DiffSide(store, "tiny-alex", "epoch-1")
    assert resolve_side("tiny-alex", store_root=store).checkpoint == "epoch-2"
    assert resolve_side(f"{store}:tiny-vgg", store_root=None) == DiffSide(store, "tiny-vgg", "final")
    assert is_folder_ref(str(store)) and is_folder_ref(f"{store}:tiny-vgg") and not is_folder_ref("tiny-vgg")
    with pytest.raises(DiffError) as exc:
        resolve_side(str(store))  # a store with two networks needs DIR:NETWORK@CHECKPOINT
    one_line(exc, "holds networks ['tiny-alex', 'tiny-vgg']", ":NETWORK@CHECKPOINT")
    with pytest.raises(DiffError) as exc2:
        resolve_side("tiny-alex@epoch-1")
    one_line(exc2, "need a spec")
    with pytest.raises(DiffError) as exc3:
        resolve_side(str(tmp_path))
    one_line(exc3, "not an atlas output folder")


def test_diff_and_render_never_import_torch(store: Path, tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from sitegen.diff import DiffSide, diff_stores
        from sitegen.render import render_site
        root = Path({str(store)!r})
        diff_stores(DiffSide(root, "tiny-alex", "epoch-1"), DiffSide(root, "tiny-alex", "epoch-2"))
        render_site(root, Path({str(tmp_path / "site")!r}))
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision")))
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _group(pattern: str, text: str) -> str:
    m = re.search(pattern, text, re.S)
    assert m, f"{pattern!r} not found"
    return m.group(1)
