"""Class pages (issue 15, item 4): the classes kind's rankings (known answers) and the pages."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fixture_store import XSS_CLASS, add_distribution, make_fixture_store

from sitegen.analyses import classes as kind
from sitegen.analyses.distribution import class_means, selectivity
from sitegen.analyses.registry import REGISTRY, names
from sitegen.render import check_site, render_site
from sitegen.render.classes import OVERALL, PER_LAYER, class_paths
from sitegen.store import Store
from sitegen.store.formats import ClassesDoc

# --- the analysis: known answers ------------------------------------------------------------------


def _f32_rtol(terms: int) -> float:
    """A relative tolerance for a float32 sum of ``terms`` values summed in another order (a few
    eps per term; the selectivity ratio adds a small factor)."""
    return 16 * terms * float(np.finfo(np.float32).eps)


def test_unit_shares_weigh_rank_and_skip_empty_slots() -> None:
    # k = 3: ranks weigh 3, 2, 1; an empty slot (-1) leaves the total (3 + 2 for the third row)
    labels = np.array([[0, 0, 0], [0, 1, 0], [1, 0, -1], [-1, -1, -1]])
    got = kind.unit_shares(labels, 3)
    want = np.array([[1, 0, 0], [4 / 6, 2 / 6, 0], [2 / 5, 3 / 5, 0], [0, 0, 0]])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[:3].sum(1), 1.0, rtol=0, atol=1e-15)


def test_best_units_ties_go_to_the_lower_unit_and_zero_is_never_listed() -> None:
    scores = np.array([[0.5, 0.0, 0.0], [0.9, 0.0, 0.3], [0.5, 0.0, 0.3], [0.5, 0.0, 0.0]])
    r = kind.best_units(scores, np.array([9, 4, 2, 6]), 3)
    assert r.units == [[4, 2, 6], [], [2, 4]]  # 0.9 first; the three 0.5 ties by unit: 2, 6, 9
    assert r.values == [[0.9, 0.5, 0.5], [], [0.3, 0.3]]
    assert r.count == [4, 0, 2]


def test_layer_rankings_share_on_hand_made_topk() -> None:
    labels = np.array([0, 0, 1, 1, 2, 0])  # probe image -> class
    # units 0..3, k = 3 (image indices); unit 3 is not shown
    images = np.array([[0, 1, 5], [0, 2, 1], [3, 0, -1], [0, 1, 5]])
    r = kind.layer_rankings(images, labels, 3, [2, 0, 1], n=2)
    assert r.shown == 3 and r.selectivity is None  # no activations: no selectivity
    # class 0: unit 0 = 1, unit 1 = (3 + 1) / 6, unit 2 = 2 / 5; n = 2 keeps 0 and 1, count says 3
    assert r.share.units[0] == [0, 1] and r.share.count[0] == 3
    np.testing.assert_allclose(r.share.values[0], [1.0, 4 / 6], rtol=0, atol=1e-15)
    assert r.share.units[1] == [2, 1]  # 3/5 before 2/6
    assert r.share.units[2] == [] and r.share.count[2] == 0


def test_units_with_a_flat_topk_get_no_share() -> None:
    """A dead or constant unit's top-k is mining's tie-break (images 0..k-1: the first class)."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    images = np.array([[0, 1, 2], [0, 1, 2], [3, 0, -1]])
    values = np.array([[0.0, 0.0, 0.0], [3.0, 2.0, 2.0], [1.5, 1.5, 0.0]])
    r = kind.layer_rankings(images, labels, 2, [0, 1, 2], n=3, topk_values=values)
    assert r.share.units == [[1], []] and r.share.count == [1, 0]  # unit 0 dead, unit 2 flat
    assert kind.layer_rankings(images, labels, 2, [0, 1, 2], n=3).share.units[0] == [0, 1, 2]


def test_layer_rankings_selectivity_matches_the_distribution_kind() -> None:
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(3), 4)  # 12 images, 3 classes
    x = rng.random((12, 5)) * 0.2
    x[labels == 1, 0] += 3.0  # unit 0: class 1
    x[labels == 2, 1] += 1.0  # unit 1: class 2, less selective than unit 4
    x[labels == 2, 4] += 5.0  # unit 4: class 2
    x[labels == 0, 2] += 2.0  # unit 2: class 0
    x[:, 3] = 0.0  # unit 3: dead, listed nowhere
    images = np.tile(np.arange(3), (5, 1))
    r = kind.layer_rankings(images, labels, 3, [0, 1, 2, 3, 4], n=5, x_all=x.astype(np.float16))
    assert r.selectivity is not None
    x32 = x.astype(np.float16).astype(np.float32)
    si = selectivity(class_means(x32, labels, 3))
    assert r.selectivity.units == [[2], [0], [4, 1]]
    # both paths sum float32 class means (BLAS; another build may order the sums differently)
    np.testing.assert_allclose(r.selectivity.values[2], [si[4], si[1]], rtol=_f32_rtol(len(labels)))
    assert si[4] > si[1] > 0
    assert sum(r.selectivity.count) == 4
    # a layer with a negative value is not rectified: selectivity undefined, as on the unit pages
    x[0, 0] = -1.0
    assert kind.layer_rankings(images, labels, 3, [0, 1], n=2, x_all=x).selectivity is None


def test_registered_without_page_sections() -> None:
    assert "classes" in names()
    section = REGISTRY["classes"].section()
    assert not any(hasattr(section, f) for f in ("network", "layer", "unit"))


def test_class_paths_are_unique_and_safe() -> None:
    got = class_paths("ds", ["a b", "a-b", "index", "A-B", XSS_CLASS, "a b"])
    assert len({p.lower() for p in got}) == len(got)
    assert got[0] == "classes/ds/a-b.html" and got[2] != "classes/ds/index.html"
    assert all(re.fullmatch(r"classes/ds/[A-Za-z0-9_.-]+\.html", p) for p in got)


# --- the pages ------------------------------------------------------------------------------------


def add_classes(root: Path, net: str, ckpt: str, units: int = 12) -> ClassesDoc:
    """Give one fixture checkpoint its ``classes.json``, computed by the analysis from the stored
    top-k (and ``activations.npy`` when :func:`add_distribution` wrote one)."""
    store = Store(root)
    m = store.read_manifest(net, ckpt)
    rec = store.read_network(net)
    ds = store.read_dataset(rec.dataset)
    labels = np.load(store.dataset_dir(rec.dataset) / "labels.npy")
    mined = store.read_arrays(net, ckpt, "mined")
    ck = store.checkpoint_dir(net, ckpt)
    acts = None
    if (ck / "activations.json").is_file():
        meta = json.loads((ck / "activations.json").read_text())
        acts = (np.load(ck / meta["file"]), meta)
    layers = {}
    for name in m.layers:
        x = None
        if acts is not None:
            off, n = acts[1]["offsets"][name], acts[1]["units"][name]
            x = acts[0][:, off : off + n]
        layers[name] = kind.layer_rankings(
            mined[f"{name}/images"],
            labels,
            len(ds.class_names),
            m.shown_units[name],
            units,
            x,
            mined[f"{name}/values"],
        )
    doc = kind.document(kind.Result(units=units, top_k=m.top_k, activations=acts is not None, layers=layers))
    store.write_analysis(net, ckpt, doc)
    store.write_manifest(m.model_copy(update={"techniques": [*m.techniques, "classes"]}))
    return doc


class _Anchors(HTMLParser):
    """Nested links (invalid HTML) and the chips outside links."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.nested = 0
        self.plain_chips = 0
        self.linked_chips = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        chip = "chip" in (dict(attrs).get("class") or "").split()
        if tag == "a":
            self.nested += self.depth > 0
            self.depth += 1
            self.linked_chips += chip
        elif chip and self.depth == 0:
            self.plain_chips += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self.depth -= 1


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    store = add_distribution(make_fixture_store(root / "store", xss=True, diff=True))
    add_classes(store, "tiny-alex", "epoch-2")
    add_classes(store, "tiny-vgg", Store(store).read_network("tiny-vgg").checkpoints[-1].name)
    render_site(store, root / "site")
    return root


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_link_resolves_and_the_xss_class_is_escaped(site: Path) -> None:
    out = site / "site"
    assert not check_site(out)
    pages = sorted((out / "classes" / "shapes").glob("*.html"))
    assert len(pages) == 6 + 1  # six classes and the list
    xss = out / "classes" / "shapes" / "img-src-x-onerror-alert-1.html"
    html = _text(xss)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img src=x" not in _text(out / "classes" / "shapes" / "index.html")
    assert 'href="classes/shapes/index.html"' in _text(out / "index.html")


def test_chips_link_their_class_pages_everywhere_but_inside_links(site: Path) -> None:
    out = site / "site"
    for page in out.rglob("*.html"):
        p = _Anchors()
        p.feed(_text(page))
        assert p.nested == 0, page
        if page.parts[-2:] != ("site", "404.html"):
            assert p.plain_chips == 0, page  # chips outside a link link their class page
    unit = _text(out / "tiny-alex" / "conv1" / "unit-0000.html")
    assert re.search(r'<a class="chip c\d+" href="\.\./\.\./classes/shapes/[a-z-]+\.html"', unit)
    layer = _text(out / "tiny-alex" / "conv1" / "index.html")
    assert re.search(r'<span class="chip c\d+"', layer)  # tiles are links already: their chips stay spans


def _listed(html: str, section: str) -> list[tuple[str, str, int, str]]:
    body = html.split(f'id="{section}"')[1].split("</section>")[0]
    return [
        (m[1], m[2], int(m[3]), m[4])
        for m in re.finditer(
            r'<li class="cu"><a href="[^"]*" title="([^ ]+) · ([^ ]+) · unit (\d+): \w+ ([^"]+)"', body
        )
    ]


def test_share_ranking_is_the_merged_best_over_layers_and_networks(site: Path) -> None:
    store = Store(site / "store")
    docs = {
        net: store.read_analysis(net, store.read_network(net).checkpoints[-1].name, ClassesDoc)
        for net in ("tiny-alex", "tiny-vgg")
    }
    order = {net: i for i, net in enumerate(docs)}
    ds = store.read_dataset("shapes")
    for c, name in enumerate(ds.class_names):
        pool = []
        for net, doc in docs.items():
            layers = store.read_manifest(net, store.read_network(net).checkpoints[-1].name).layers
            for li, layer in enumerate(layers):
                r = doc.layers[layer].share
                pool += [
                    (-v, order[net], li, u, net, layer) for u, v in zip(r.units[c], r.values[c], strict=True)
                ]
        pool.sort(key=lambda t: t[:4])
        want = [(net, layer, u, f"{-v * 100:.0f}%") for v, _, _, u, net, layer in pool[:OVERALL]]
        page = store.root.parent / "site" / class_paths("shapes", ds.class_names)[c]
        assert _listed(_text(page), "by-share") == want, name


def test_selectivity_ranking_and_per_layer_rows(site: Path) -> None:
    out = site / "site" / "classes" / "shapes" / "circle.html"
    html = _text(out)
    sel = _listed(html, "by-selectivity")
    values = [float(v) for *_, v in sel]
    assert sel and values == sorted(values, reverse=True)
    # tiny-vgg has no activations: only tiny-alex units can be selective
    assert {net for net, *_ in sel} == {"tiny-alex"}
    rows = html.split('id="per-layer"')[1]
    assert rows.count("<tr>") == 1 + 2 * 4  # header + conv1, conv2, fc6, prob of each network
    assert "undefined" not in rows.split("tiny-vgg")[0]
    for row in re.findall(r"<tr>.*?</tr>", rows, flags=re.S)[1:]:
        assert row.count('<li class="cu">') <= 2 * PER_LAYER


def test_pages_without_classes_documents_say_why(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store", networks=("tiny-alex",))
    render_site(store, tmp_path / "site")
    html = _text(tmp_path / "site" / "classes" / "shapes" / "circle.html")
    assert "analyses.classes.enabled" in html and 'class="cu"' not in html
    assert "Probe accuracy" in html and "Probe images of the class" in html
    assert not check_site(tmp_path / "site")


def test_selectivity_reads_blocks_of_columns_as_the_build_does(tmp_path: Path, monkeypatch) -> None:
    """The build hands a mine.LayerColumns (pread, ``[:, a:b]`` only); blocks of 3 columns give the
    same ranking as one array (shown units spread over the blocks, the second layer's columns
    beside the first's in the file)."""
    from sitegen.mine import LayerColumns

    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(4), 5)
    x = (rng.random((20, 11)) * rng.random((1, 11)) * 4).astype(np.float16)
    np.save(tmp_path / "a.npy", np.concatenate([rng.random((20, 2)).astype(np.float16), x], axis=1))
    images = np.tile(np.arange(4), (11, 1))
    shown = [0, 2, 5, 6, 10]
    want = kind.layer_rankings(images, labels, 4, shown, 3, x)
    monkeypatch.setattr(kind, "_BLOCK", 3 * 20)
    got = kind.layer_rankings(images, labels, 4, shown, 3, LayerColumns(tmp_path / "a.npy", 2, 11))
    assert want.selectivity is not None and got.selectivity is not None and got.share == want.share
    assert got.selectivity.units == want.selectivity.units and sum(want.selectivity.count) == 5
    for g, w in zip(got.selectivity.values, want.selectivity.values, strict=True):
        # float32 class sums over other column blocks
        np.testing.assert_allclose(g, w, rtol=_f32_rtol(len(labels)))
