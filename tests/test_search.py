"""Search across the atlas (issue 15, item 8): the index render writes, and the box in a real browser.

The index tests read the fixture store (with its distribution document: conv2 unit 0 of tiny-alex's
epoch-2 is dead, unit 1 fires on one probe image of 48, rarely at ``rare`` = 5 %) and check every row
against the store itself. The browser tests (marked ``browser``; chromium driven by playwright, the
setup of tests/test_browser.py) serve the site under a sub-path, type queries into the top bar's box
and follow the chosen row; screenshots with the list open land in ``test-artifacts/search-*.png``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fixture_store import XSS_CLASS, add_distribution, make_fixture_store
from test_browser import _OVERFLOW, ARTIFACTS, VIEWPORTS, Browser, _Quiet

from sitegen.render import render_site
from sitegen.render.search import GLOBAL, INDEX_PATH, search_index, search_script
from sitegen.render.views import Page
from sitegen.store import Store
from sitegen.store.formats import DistributionDoc

PREFIX = f"window.{GLOBAL}="


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_fixture_store(tmp_path_factory.mktemp("search-store") / "store", xss=True, diff=True)
    return add_distribution(root)


@pytest.fixture(scope="module")
def site(store_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("search-www") / "REPO"
    render_site(store_root, site)
    return site


def _read(site: Path) -> dict[str, Any]:
    text = (site / INDEX_PATH).read_text(encoding="utf-8")
    assert text.startswith(PREFIX) and text.endswith(";\n")
    return json.loads(text[len(PREFIX) : -2])


def _units(row: list[Any]) -> list[int]:
    return list(range(row[3])) if isinstance(row[3], int) else row[3]


# --- the index ------------------------------------------------------------------------------------


def test_index_lists_networks_checkpoints_and_layers(site: Path) -> None:
    ix = _read(site)
    assert ix["format"] == 1
    assert ix["nets"] == [["tiny-alex", 0], ["tiny-vgg", 0]]
    assert ix["cks"] == [
        [0, "epoch-1", "tiny-alex/@epoch-1/index.html", 0],
        [0, "epoch-2", "tiny-alex/index.html", 1],
        [1, "final", "tiny-vgg/index.html", 1],
    ]
    layers = [(r[0], r[1], r[2]) for r in ix["layers"]]
    bases = ["tiny-alex/@epoch-1/", "tiny-alex/", "tiny-vgg/"]
    assert layers == [
        (c, n, f"{bases[c]}{n}/index.html") for c in range(3) for n in ("conv1", "conv2", "fc6", "prob")
    ]
    # fc6 shows all but its last four units (fixture rule): 0..11, stored as a count
    assert [r[3] for r in ix["layers"]] == [8, 12, 12, 6] * 3
    assert [r[8] for r in ix["layers"]] == [0, 0, 0, 1] * 3  # prob: unit i is class i


def test_units_dominant_class_and_purity_come_from_the_store(site: Path, store_root: Path) -> None:
    store = Store(store_root)
    ix = _read(site)
    for row in ix["layers"]:
        net, ck = ix["nets"][ix["cks"][row[0]][0]][0], ix["cks"][row[0]][1]
        shown = store.read_manifest(net, ck).shown_units[row[1]]
        classes = store.read_arrays(net, ck, "classes")
        assert _units(row) == list(shown)
        assert row[4] == classes[f"{row[1]}/dominant"][shown].tolist()
        assert row[5] == np.round(classes[f"{row[1]}/purity"][shown] * 100).astype(int).tolist()


def test_dead_and_rarely_firing_units_from_the_distribution(site: Path, store_root: Path) -> None:
    ix = _read(site)
    flags = {(r[0], r[1]): (r[6], r[7]) for r in ix["layers"]}
    # add_distribution: conv2 unit 0 never fires, unit 1 on one image of 48 (2 % < rare = 5 %); the
    # other units fire on their top-9 images at least. prob has no density (a softmax is never 0);
    # epoch-1 and tiny-vgg have no distribution document.
    assert flags[(1, "conv2")] == ([0], [1])
    assert flags[(1, "conv1")] == flags[(1, "fc6")] == ([], [])
    assert flags[(1, "prob")] == (None, None)
    assert all(flags[(c, n)] == (None, None) for c in (0, 2) for n in ("conv1", "conv2", "fc6", "prob"))
    # the same as the document's densities (all units of the layer, shown or not)
    doc = Store(store_root).read_analysis("tiny-alex", "epoch-2", DistributionDoc)
    for name in ("conv1", "conv2", "fc6"):
        density = np.asarray(doc.layers[name].density)
        dead, rare = flags[(1, name)]
        assert dead == np.flatnonzero(density == 0).tolist()
        assert rare == np.flatnonzero((density > 0) & (density < doc.rare)).tolist()


def test_classes_and_their_pages(site: Path) -> None:
    ix = _read(site)
    [(name, classes, pages)] = ix["datasets"]
    assert name == "shapes"
    assert classes == ["circle", "square", "triangle", "cross", XSS_CLASS, "spiral"]
    assert len(classes) == len(pages) == 6
    # a class links its page exactly when the site has one (class pages: sitegen.render.classes)
    on_disk = {
        p.relative_to(site).as_posix() for p in site.glob("classes/shapes/*.html") if p.name != "index.html"
    }
    assert {p for p in pages if p} == on_disk
    assert all(p.startswith("classes/shapes/") for p in pages if p)
    assert not any(p[2] in on_disk for p in ix["pages"]), "class pages are listed once, with their class"


def test_every_href_of_the_index_resolves(site: Path) -> None:
    ix = _read(site)
    hrefs = [c[2] for c in ix["cks"]] + [p[2] for p in ix["pages"]]
    hrefs += [p for d in ix["datasets"] for p in d[2] if p]
    for row in ix["layers"]:
        folder = row[2].removesuffix("index.html")
        hrefs += [row[2]] + [f"{folder}unit-{u:04d}.html" for u in _units(row)]
    missing = [h for h in hrefs if not (site / h).is_file()]
    assert not missing, missing[:5]
    # search.js derives unit pages from the layer folder: a unit without a page must have no file
    assert not (site / "tiny-vgg/fc6/unit-0012.html").exists()
    kinds = {p[0] for p in ix["pages"]}
    assert {"compare", "diff", "evolution"} <= kinds
    assert not kinds & {"network", "layer", "unit", "index", "404"}


def test_hand_made_pages_known_rows_and_a_safe_script() -> None:
    """A plan of five hand-made pages: sparse units stay a list, contiguous ones a count, and the
    script is JSON whatever the strings (U+2028 escaped, markup kept as data)."""

    def tile(u: int, c: int, p: float) -> SimpleNamespace:
        return SimpleNamespace(unit=u, chip=SimpleNamespace(index=c), purity=p)

    chips = tuple(SimpleNamespace(chip=SimpleNamespace(name=n)) for n in ("a", "b\u2028</script>"))
    pages = [
        Page("index.html", "index.html", {"datasets": (SimpleNamespace(name="d", classes=chips),)}),
        Page("n/index.html", "network.html", {"net": "n", "checkpoint": "last", "dataset": "d"}),
        Page(
            "n/l/index.html",
            "layer.html",
            {"net": "n", "layer": "l", "tiles": (tile(5, 1, 0.5), tile(2, 0, 1 / 3)), "sections": ()},
        ),
        Page(
            "n/l/page-2.html",
            "layer.html",
            {"net": "n", "layer": "l", "tiles": (tile(9, 1, 0.999),), "sections": ()},
        ),
        Page(
            "n/m/index.html",
            "layer.html",
            {"net": "n", "layer": "m", "tiles": (tile(1, 0, 1.0), tile(0, 1, 0.0)), "sections": ()},
        ),
        Page(
            "n/m/unit-0000.html",
            "unit.html",
            {"net": "n", "layer": "m", "out_class": SimpleNamespace(name="a")},
        ),
        Page("x/y.html", "compare.html", {"title": "x \u2028 y"}),
    ]
    ix = search_index(pages)
    assert ix["layers"] == [
        [0, "l", "n/l/index.html", [2, 5, 9], [0, 1, 1], [33, 50, 100], None, None, 0],
        [0, "m", "n/m/index.html", 2, [1, 0], [0, 100], None, None, 1],
    ]
    assert ix["pages"] == [["compare", "x \u2028 y", "x/y.html"]]
    assert ix["datasets"] == [["d", ["a", "b\u2028</script>"], ["", ""]]]
    script = search_script(pages)
    assert "\u2028" not in script and "\\u2028" in script
    assert json.loads(script[len(PREFIX) : -2]) == ix


# --- in the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The site behind a local server under /REPO/ (as on GitHub project pages)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/REPO/"
    finally:
        server.shutdown()
        server.server_close()


def _query(page: Any, text: str) -> list[dict[str, str]]:
    """Type ``text`` into the box (focused by the / key) and return the rows shown."""
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "search-input"
    page.fill("#search-input", text)
    page.wait_for_selector("#search-list:not([hidden]) li")
    return page.eval_on_selector_all(
        "#search-list li",
        """els => els.map(e => ({
            kind: (e.querySelector('.search-kind') || {}).textContent || '',
            text: (e.querySelector('.search-text') || e).textContent,
            note: (e.querySelector('.search-note') || {}).textContent || ''}))""",
    )


@pytest.mark.browser
def test_unit_query_opens_the_unit_from_a_sub_folder(browser: Browser, served: str) -> None:  # noqa: F811
    page = browser.open(served + "tiny-alex/@epoch-1/conv2/unit-0001.html")
    assert page.evaluate(f"typeof window.{GLOBAL}") == "undefined", "the index loads on first use only"
    rows = _query(page, "conv2/3")
    assert [r["text"] for r in rows[:2]] == ["tiny-alex conv2/3", "tiny-vgg conv2/3"]
    assert rows[0]["kind"] == "unit" and rows[0]["note"].startswith("prefers ")
    box = page.locator("#search-input")
    assert box.get_attribute("aria-expanded") == "true"
    assert box.get_attribute("role") == "combobox" and box.get_attribute("aria-controls") == "search-list"
    assert "Enter opens" in page.text_content(f"#{box.get_attribute('aria-describedby')}")
    assert page.locator("#search-list").get_attribute("role") == "listbox"
    with page.expect_navigation():
        page.keyboard.press("Enter")  # nothing chosen: the first row
    assert page.url == served + "tiny-alex/conv2/unit-0003.html"
    # "net layer unit" from the site root; the arrow keys choose, aria-activedescendant follows
    page = browser.open(served + "index.html")
    rows = _query(page, "tiny-vgg conv2 3")
    assert rows[0]["text"] == "tiny-vgg conv2/3"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    active = box.get_attribute("aria-activedescendant")
    assert active == "search-opt-1"
    assert page.locator(f"#{active}").get_attribute("aria-selected") == "true"
    page.keyboard.press("ArrowUp")
    assert box.get_attribute("aria-activedescendant") == "search-opt-0"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == served + "tiny-vgg/conv2/unit-0003.html"
    assert not browser.errors, browser.errors


@pytest.mark.browser
def test_dead_and_rare_queries(browser: Browser, served: str) -> None:  # noqa: F811
    page = browser.open(served + "tiny-vgg/fc6/index.html")
    rows = _query(page, "dead")
    assert [(r["kind"], r["text"]) for r in rows] == [
        ("layer", "tiny-alex conv2"),
        ("unit", "tiny-alex conv2/0"),
    ]
    assert rows[0]["note"] == "1 dead unit" and rows[1]["note"].endswith("· dead")
    rows = _query(page, "rare conv2")
    assert [r["text"] for r in rows] == ["tiny-alex conv2", "tiny-alex conv2/1"]
    assert rows[1]["note"].endswith("· rarely firing")
    assert [r["text"] for r in _query(page, "dead units in fc6")] == ["No dead units in these layers."]
    # the layer row opens the layer grid filtered to its dead units
    _query(page, "dead units in conv2")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == served + "tiny-alex/conv2/index.html#flag=dead"
    page.wait_for_function("document.querySelectorAll('#tiles > :not([hidden])').length === 1")
    assert page.locator("#tiles > :not([hidden])").get_attribute("data-unit") == "0"
    assert not browser.errors, browser.errors


@pytest.mark.browser
def test_class_queries_show_names_as_text(browser: Browser, served: str) -> None:  # noqa: F811
    page = browser.open(served + "tiny-alex/conv2/unit-0003.html")
    rows = _query(page, "onerror")
    assert rows[0]["text"] == XSS_CLASS and rows[0]["kind"] in ("class", "class page")
    assert page.locator("#search-list img").count() == 0
    assert any(r["note"] == f"output unit of {XSS_CLASS}" for r in rows)
    assert not browser.dialogs, browser.dialogs
    # "units preferring circle": the class first (its page where the site has one), then its units
    rows = _query(page, "units preferring CIRCLE")
    assert rows[0]["text"] == "circle"
    assert any(r["kind"] == "unit" and "prefers circle" in r["note"] for r in rows)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    has_page = rows[0]["kind"] == "class page"
    assert page.url == served + ("classes/shapes/circle.html" if has_page else "index.html#dataset-shapes")
    assert not browser.errors, browser.errors


@pytest.mark.browser
def test_a_class_without_a_page_opens_its_dataset_card(browser: Browser, served: str, site: Path) -> None:  # noqa: F811
    """The same index without class pages (set before the box's first focus, so search.js takes it)."""
    ix = _read(site)
    for d in ix["datasets"]:
        d[2] = [""] * len(d[2])
    page = browser.open(served + "tiny-vgg/conv1/unit-0002.html")
    page.evaluate(f"ix => {{ window.{GLOBAL} = ix; }}", ix)
    rows = _query(page, "circle")
    assert (rows[0]["kind"], rows[0]["text"]) == ("class", "circle")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == served + "index.html#dataset-shapes"
    assert page.locator("#dataset-shapes").count() == 1
    assert not browser.errors, browser.errors


@pytest.mark.browser
def test_escape_closes_and_file_urls_load_the_index(browser: Browser, site: Path) -> None:  # noqa: F811
    """From file:// (where fetch() of JSON fails) the index still loads, as a script."""
    page = browser.open((site / "tiny-alex" / "fc6" / "unit-0002.html").as_uri())
    rows = _query(page, "fc6")
    assert [r["text"] for r in rows] == ["tiny-alex fc6", "tiny-vgg fc6"]
    page.keyboard.press("Escape")
    assert page.locator("#search-list").is_hidden()
    assert page.locator("#search-input").get_attribute("aria-expanded") == "false"
    page.keyboard.press("ArrowDown")  # opens the list again
    page.keyboard.press("ArrowDown")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == (site / "tiny-alex" / "fc6" / "index.html").as_uri()
    assert not browser.errors, browser.errors


@pytest.mark.browser
@pytest.mark.parametrize("size", list(VIEWPORTS))
def test_open_list_fits_the_screen(browser: Browser, served: str, size: str) -> None:  # noqa: F811
    width, height = VIEWPORTS[size]
    browser.page.set_viewport_size({"width": width, "height": height})
    try:
        page = browser.open(served + "tiny-alex/conv2/unit-0003.html")
        _query(page, "circle")
        page.keyboard.press("ArrowDown")
        css = page.evaluate("getComputedStyle(document.getElementById('search-list')).position")
        assert css == "absolute", "style.css lost the search box's rules"
        box = page.locator("#search-list").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth"), page.evaluate(_OVERFLOW)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"search-{size}.png"))
    finally:
        browser.page.set_viewport_size({"width": 1400, "height": 900})


# query -> its first row (kind, text); "class*" is "class" or "class page"
FIRST_ROWS = {
    "tiny-vgg": ("network", "tiny-vgg"),
    "tiny-alex@epoch-1": ("checkpoint", "tiny-alex @ epoch-1"),
    "epoch-1 conv2/3": ("unit", "tiny-alex @ epoch-1 conv2/3"),
    "alex 3": ("unit", "tiny-alex conv1/3"),
    "vgg/fc6/11": ("unit", "tiny-vgg fc6/11"),
    "fc6 12": ("layer", "tiny-alex fc6"),  # fc6 unit 12 has no page: its layer says so
    "conv": ("layer", "tiny-alex conv1"),
    "squ": ("class*", "square"),
    "diff alex": ("diff", "Diff · tiny-alex@epoch-1 → tiny-alex@epoch-2"),
    "evolution conv2": ("layer", "tiny-alex conv2"),
}


@pytest.mark.browser
def test_query_parsing(browser: Browser, served: str) -> None:  # noqa: F811
    page = browser.open(served + "compare/shapes.html")
    for query, (kind, text) in FIRST_ROWS.items():
        rows = _query(page, query)
        first = rows[0]["kind"]
        if kind == "class*" and first in ("class", "class page"):
            first = kind  # with or without class pages
        assert (first, rows[0]["text"]) == (kind, text), (query, rows[:3])
    notes = {r["text"]: r["note"] for r in _query(page, "fc6 12")}
    assert notes["tiny-alex fc6"] == "unit 12 has no page here"
    assert ("evolution", "tiny-alex · conv2 · feature evolution") in [
        (r["kind"], r["text"]) for r in _query(page, "evolution conv2")
    ]
    assert not browser.errors, browser.errors


@pytest.mark.browser
def test_a_flagged_unit_without_a_page_opens_the_layers_list(
    browser: Browser, served: str, site: Path
) -> None:  # noqa: F811
    """The index as if conv2's rarely firing unit 1 had no page (set before the first focus): its row and
    its layer's row open the layer's distribution section, which lists every flagged unit."""
    ix = _read(site)
    [row] = [r for r in ix["layers"] if r[2] == "tiny-alex/conv2/index.html"]
    keep = [i for i, u in enumerate(_units(row)) if u != 1]
    row[3], row[4], row[5] = (
        [_units(row)[i] for i in keep],
        [row[4][i] for i in keep],
        [row[5][i] for i in keep],
    )
    page = browser.open(served + "index.html")
    page.evaluate(f"ix => {{ window.{GLOBAL} = ix; }}", ix)
    rows = _query(page, "rare conv2")
    assert [r["text"] for r in rows] == ["tiny-alex conv2", "tiny-alex conv2/1"]
    assert rows[1]["note"] == "rarely firing · no unit page: its layer"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url == served + "tiny-alex/conv2/index.html#distribution"
    assert page.locator("#distribution").count() == 1
    # the dead unit 0 still has its page: the layer's row filters the grid
    rows = _query(page, "dead conv2")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith("tiny-alex/conv2/index.html#flag=dead")
    assert not browser.errors, browser.errors
