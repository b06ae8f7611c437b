"""Similar units, linear CKA and Hungarian matching (issue 15, item 6): known answers."""

from __future__ import annotations

import numpy as np
import pytest

from sitegen.analyses import similarity
from sitegen.analyses.similarity import cka_matrix, linear_cka, match_units, top_correlated


def _orthogonal(p: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(p, p)))
    return q * np.sign(np.diag(r))


# --- CKA ------------------------------------------------------------------------------------------


def test_cka_of_identical_features_is_one() -> None:
    x = np.random.default_rng(0).normal(size=(40, 6))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert cka_matrix([x], [x])[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_cka_of_orthogonal_features_is_zero() -> None:
    rng = np.random.default_rng(1)
    # centred columns, then Y's columns in the orthogonal complement of X's span: Xᵀ Y = 0
    z = rng.normal(size=(30, 5))
    z -= z.mean(0)
    q, _ = np.linalg.qr(np.column_stack([np.ones(30), z]))
    x, y = q[:, 1:3] * [2.0, 0.5], q[:, 3:6]
    assert np.abs(x.T @ y).max() < 1e-12
    assert linear_cka(x, y) == pytest.approx(0.0, abs=1e-12)
    assert cka_matrix([x], [y])[0, 0] == pytest.approx(0.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 7))
    y = x[:, :4] @ rng.normal(size=(4, 5)) + 0.3 * rng.normal(size=(50, 5))
    base = linear_cka(x, y)
    assert 0.05 < base < 0.95
    assert linear_cka(3.0 * x @ _orthogonal(7, rng), y) == pytest.approx(base, rel=1e-12)
    assert linear_cka(x, 0.2 * y @ _orthogonal(5, rng) + 4.0) == pytest.approx(base, rel=1e-12)


def test_cka_direct_formula_by_hand() -> None:
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    y = np.array([[1.0], [0.0], [1.0], [0.0]])  # equals x's first column
    xc, yc = x - x.mean(0), y - y.mean(0)
    # ||Y^T X||^2 = (1, 0)^2 = 1; ||X^T X|| = ||I|| = sqrt(2); ||Y^T Y|| = 1
    assert np.allclose(xc.T @ xc, np.eye(2)) and np.allclose(yc.T @ yc, [[1.0]])
    assert linear_cka(x, y) == pytest.approx(1 / np.sqrt(2), abs=1e-15)


@pytest.mark.parametrize("widths", [(3, 5), (12, 5), (12, 30), (30, 30)])
def test_cka_matrix_gram_and_feature_routes_equal_the_direct_formula(widths: tuple[int, int]) -> None:
    """N = 10 images: widths over 10 take the Gram route, the others the feature route; float64."""
    rng = np.random.default_rng(sum(widths))
    n = 10
    a = [rng.normal(size=(n, widths[0])), rng.random((n, widths[1])).astype(np.float16)]
    b = [rng.normal(size=(n, widths[1])) ** 2, a[0] @ rng.normal(size=(widths[0], widths[0]))]
    got = cka_matrix(a, b)
    want = np.array([[linear_cka(x, y) for y in b] for x in a])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    same = cka_matrix(a, a)
    np.testing.assert_allclose(np.diag(same), 1.0, atol=1e-12)
    np.testing.assert_allclose(same, same.T, atol=1e-12)


def test_cka_of_a_constant_layer_is_undefined() -> None:
    x = np.random.default_rng(3).normal(size=(20, 4))
    assert np.isnan(cka_matrix([x], [np.ones((20, 3))])[0, 0])
    assert np.isnan(linear_cka(x, np.full((20, 30), 2.0)))


def test_cka_blocks_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    a = [rng.normal(size=(9, 4)), rng.normal(size=(9, 20))]
    whole = cka_matrix(a, a[::-1])
    monkeypatch.setattr(similarity, "_BLOCK", 9 * 3)  # 3 columns per block
    np.testing.assert_allclose(cka_matrix(a, a[::-1]), whole, rtol=1e-12)


# --- correlation top-k ------------------------------------------------------------------------------


def _corr_topk(x: np.ndarray, rows: list[int], y: np.ndarray, k: int, same: bool) -> list[list[int]]:
    ua = x.shape[1]
    c = np.corrcoef(np.column_stack([x, y]).T.astype(np.float64))[:ua, ua:]
    out = []
    for u in rows:
        r = c[u].copy()
        if same:
            r[u] = -np.inf
        out.append(sorted(range(len(r)), key=lambda j: (-r[j], j))[:k])
    return out


@pytest.mark.parametrize("block", [None, 2])
def test_top_correlated_matches_np_corrcoef(block: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(size=(200, 3))
    x = np.column_stack([base @ rng.normal(size=(3, 9)) + 0.5 * rng.normal(size=(200, 9))]).astype(np.float16)
    y = np.column_stack(
        [x[:, :4].astype(np.float64) * 2 + rng.normal(size=(200, 4)), rng.normal(size=(200, 7))]
    )
    if block:
        monkeypatch.setattr(similarity, "_BLOCK", 200 * block)
    rows = [0, 3, 8]
    units, r = top_correlated(x, rows, x, 4, same=True)
    assert units.tolist() == _corr_topk(x, rows, x, 4, True)
    c = np.corrcoef(x.astype(np.float64).T)
    np.testing.assert_allclose(r, c[np.array(rows)[:, None], units], atol=1e-5)  # float32 products
    nu, nr = top_correlated(x, rows, y, 5, same=False)
    assert nu.tolist() == _corr_topk(x, rows, y, 5, False)
    assert np.all(np.diff(nr, axis=1) <= 0)


def test_constant_columns_are_excluded_and_constant_rows_get_no_list() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(50, 5))
    x[:, 2] = 0.0  # dead
    x[:, 4] = 1.5  # constant
    units, r = top_correlated(x, [0, 2], x, 4, same=True)
    assert set(units[0].tolist()) == {1, 3, -1} and units[0, -1] == -1 and np.isnan(r[0, -1])
    assert (units[1] == -1).all() and np.isnan(r[1]).all()
    assert similarity.column_stats(x).constant.tolist() == [False, False, True, False, True]


def test_top_correlated_finds_a_copied_unit_with_r_one() -> None:
    rng = np.random.default_rng(7)
    x = rng.random((30, 6)).astype(np.float16)
    y = np.column_stack([rng.random((30, 2)), 3 * x[:, 4].astype(np.float64) + 1])
    units, r = top_correlated(x, [4], y, 1, same=False)
    assert units.tolist() == [[2]] and r[0, 0] == pytest.approx(1.0, abs=1e-6)


# --- Hungarian matching ------------------------------------------------------------------------------


def test_hungarian_recovers_a_permuted_noisy_copy_exactly() -> None:
    rng = np.random.default_rng(8)
    n, u = 300, 40
    x = rng.gamma(2.0, size=(n, u)) * (rng.random((n, u)) < 0.7)
    perm = rng.permutation(u)
    y = x[:, perm] + 0.3 * rng.normal(size=(n, u))
    match, r, defined = match_units(x.astype(np.float16), y.astype(np.float16))
    # y's column j is x's column perm[j]: x's unit perm[j] must be matched to j
    inverse = np.argsort(perm)
    assert match.tolist() == inverse.tolist()
    assert defined.all() and (r > 0.8).all()


def test_hungarian_with_constant_units_still_gives_a_permutation() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(80, 6))
    x[:, 1] = 0.0
    y = x[:, ::-1].copy()
    match, r, defined = match_units(x, y)
    assert sorted(match.tolist()) == list(range(6))
    assert defined.tolist() == [True, False, True, True, True, True]
    assert np.isnan(r[1]) and np.allclose(r[defined], 1.0, atol=1e-6)
    assert [match[u] for u in (0, 2, 3, 4, 5)] == [5, 3, 2, 1, 0]


# --- readers that only slice columns (mine.LayerColumns) -------------------------------------------


class SliceOnly:
    """Like :class:`sitegen.mine.LayerColumns`: ``x[:, a:b]`` and nothing else."""

    def __init__(self, x: np.ndarray) -> None:
        self._x, self.shape = x, x.shape

    def __getitem__(self, key: tuple) -> np.ndarray:
        rows, cols = key
        assert rows == slice(None) and isinstance(cols, slice) and cols.step in (None, 1), key
        return self._x[:, cols]


def test_measures_read_only_column_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(10)
    x = rng.random((40, 12)).astype(np.float16)
    y = rng.random((40, 50)).astype(np.float16)  # 50 > 40 images: the Gram route
    monkeypatch.setattr(similarity, "_BLOCK", 40 * 5)
    units, r = top_correlated(SliceOnly(x), [11, 2, 7], SliceOnly(x), 3, same=True)
    want_u, want_r = top_correlated(x, [11, 2, 7], x, 3, same=True)
    assert units.tolist() == want_u.tolist() and np.array_equal(r, want_r)
    got = cka_matrix([SliceOnly(x), SliceOnly(y)], [SliceOnly(y)])
    np.testing.assert_allclose(got, cka_matrix([x, y], [y]), rtol=1e-12)
    assert got[1, 0] == pytest.approx(1.0, abs=1e-12)


# --- the registered kind and its section -------------------------------------------------------------


def test_layer_similar_and_document() -> None:
    from sitegen.analyses.registry import REGISTRY
    from sitegen.analyses.similar import Result, document, layer_similar

    assert REGISTRY["similar"].doc.KIND == "similar"
    rng = np.random.default_rng(11)
    x = rng.random((60, 5))
    x[:, 3] = 0.0  # dead
    nxt = np.column_stack([2 * x[:, 1] + 0.1, rng.random((60, 2)), np.ones(60)])
    s = layer_similar(x, [1, 3, 4], nxt, "conv3", 2)
    assert s.rows.tolist() == [1, 4] and s.constant.tolist() == [3] and s.next_constant == 1
    assert s.next_units[0, 0] == 0 and s.next_r[0, 0] == pytest.approx(1.0, abs=1e-6)
    top1 = {"conv2": np.array([10, 11, 12, 13, 14]), "conv3": np.array([20, 21, 22, 23])}
    doc = document(Result(k=2, images=60, layers={"conv2": s}, top1=top1))
    lay = doc.layers["conv2"]
    assert list(lay.units) == ["1", "4"] and lay.constant == [3] and lay.next == "conv3"
    e = lay.units["1"]
    assert [p.unit for p in e.same] == s.same_units[0].tolist() and 3 not in [p.unit for p in e.same]
    assert e.next[0].unit == 0 and e.next[0].image == 20 and e.same[0].image == 10 + e.same[0].unit
    assert set(doc.probe_images()) == {p.image for u in lay.units.values() for p in (*u.same, *u.next)}


def test_section_lists_peers_with_links_and_states_constant_units() -> None:
    from sitegen.render.peers import Peer
    from sitegen.render.sections import UnitPage
    from sitegen.render.sections.similar import unit
    from sitegen.store.formats import SimilarDoc

    doc = SimilarDoc.model_validate(
        {
            "k": 2,
            "images": 60,
            "layers": {
                "conv2": {
                    "next": "conv3",
                    "constant": [3],
                    "next_constant": 0,
                    "units": {
                        "1": {
                            "same": [{"unit": 4, "r": 0.5, "image": 7}, {"unit": 0, "r": -0.25, "image": 2}],
                            "next": [{"unit": 0, "r": 1.0, "image": 9}],
                        }
                    },
                }
            },
        }
    )
    asked = []

    def peer(layer: str, u: int, image: int) -> Peer:
        asked.append((layer, u, image))
        return Peer(layer, u, f"net/{layer}/unit-{u:04d}.html", "", "", "", None)

    view = unit(doc, UnitPage("conv2", 1, "net/conv2/", peer), None)  # type: ignore[arg-type]
    assert view is not None
    same, nxt = view.groups
    assert [x.label for x in same.units] == ["conv2 #0004", "conv2 #0000"]
    assert [x.r for x in same.units] == ["0.50", "-0.25"] and same.units[1].bar == 25.0
    assert "1 constant unit of conv2" in same.note and nxt.title.startswith("in conv3")
    assert asked == [("conv2", 4, 7), ("conv2", 0, 2), ("conv3", 0, 9)]
    dead = unit(doc, UnitPage("conv2", 3, "net/conv2/", peer), None)  # type: ignore[arg-type]
    assert dead is not None and dead.groups == () and "undefined" in dead.note
    assert unit(doc, UnitPage("conv2", 2, "net/conv2/"), None) is None  # type: ignore[arg-type]


def test_compare_view_shows_only_the_shown_pairs_and_says_how() -> None:
    from sitegen.render.similarity import compare_cka
    from sitegen.store.formats import CkaDoc

    doc = CkaDoc.model_validate(
        {
            "dataset": "d",
            "images": 400,
            "keys": {"a@1": "k1", "b@2": "k2", "c@3": "k3"},
            "pairs": [
                {"a": "a@1", "b": "b@2", "layers_a": ["conv1", "fc"], "layers_b": ["x", "fc"],
                 "cka": [[0.5, None], [0.25, 0.75]]},
                {"a": "a@1", "b": "c@3", "layers_a": ["conv1"], "layers_b": ["y"], "cka": [[0.1]]},
            ],
        }
    )
    sec = compare_cka(doc, ["a@1", "b@2"])
    (v,) = sec.views
    assert v.title == "a vs b" and v.diagonal == "same-named layers (fc): mean CKA 0.75"
    z = v.figure.spec["data"][0]["z"]
    assert z == [[0.5, None], [0.25, 0.75]] and v.figure.spec["data"][0]["zmax"] == 1
    assert "400 probe images" in sec.note and "max-pooled" in sec.note
    assert compare_cka(None, ["a@1"]).views == () and "activations" in compare_cka(None, []).note
