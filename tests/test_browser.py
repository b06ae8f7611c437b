"""The rendered site in a real browser: Debian chromium driven by playwright (shared/RECIPES.md).

The site is served under a sub-path (``/REPO/``, as on GitHub project pages) by a local HTTP server,
so any root-absolute URL would show up as a 404. One browser page is shared by all tests (parsing
plotly.min.js costs seconds). Screenshots of every page kind land in ``test-artifacts/`` (git-ignored).

Skipped when chromium or playwright is missing, except under CI (env ``CI`` set), where that fails.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fixture_store import XSS_CLASS, make_fixture_store

from sitegen.render import render_site

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PAGES = {
    "index": "index.html",
    "network": "tiny-alex/index.html",
    "network-epoch-1": "tiny-alex/@epoch-1/index.html",
    "layer": "tiny-alex/conv2/index.html",
    "unit": "tiny-alex/conv2/unit-0003.html",
    "compare": "compare/shapes.html",
    "diff": "diff/tiny-alex@epoch-1--tiny-alex@epoch-2/index.html",
    "evolution": "tiny-alex/evolution/index.html",
    "evolution-layer": "tiny-alex/evolution/conv2.html",
}


def _require_browser() -> None:
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "playwright is not installed (pip install playwright; never `playwright install`)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests must run under CI: {problem}")
        pytest.skip(problem)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL ending in /REPO/, site folder) of the XSS fixture's site (with its epoch diff) behind a
    local server."""
    root = tmp_path_factory.mktemp("www")
    store = make_fixture_store(tmp_path_factory.mktemp("browser-store") / "store", xss=True, diff=True)
    site = root / "REPO"
    render_site(store, site)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/REPO/", site
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """One chromium page plus what it reported: console errors, page errors, failed requests, dialogs."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        # Listeners first: anything a page reports while loading must be caught.
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))
        page.on(
            "response", lambda r: self.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
        )
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, url: str) -> Any:
        """Load ``url``, draw its charts and every lazy image, and return the page."""
        self.errors.clear()
        page = self.page
        page.goto(url)
        page.wait_for_load_state("load")
        n_figures = page.locator("[data-figure]").count()
        if n_figures:
            page.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n_figures}"
            )
        # Lazy images below the fold load only when scrolled to; load them all so a broken one shows.
        page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)")
        broken = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).map(i => i.src)")
        assert not broken, broken
        return page


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)  # plotly.min.js takes seconds to parse on 2 busy cores
        try:
            yield Browser(page)
        finally:
            chromium.close()


@pytest.mark.parametrize("kind", list(PAGES))
def test_page_loads_clean(browser: Browser, served: tuple[str, Path], kind: str) -> None:
    base, _site = served
    page = browser.open(base + PAGES[kind])
    assert not browser.errors, browser.errors
    assert not browser.dialogs, browser.dialogs
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{kind}.png"), full_page=True)


def test_charts_are_drawn_with_escaped_labels(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    page = browser.open(base + PAGES["network"])
    assert page.locator(".js-plotly-plot .main-svg").count() >= page.locator("[data-figure]").count() == 4
    assert page.locator("#fig-overall g.point").count() == 6  # one bar per class
    ticks = page.locator("#fig-overall .xtick text").all_text_contents()
    assert XSS_CLASS in ticks  # shown as text …
    assert page.locator('img[src="x"]').count() == 0  # … never as an element
    assert not browser.errors and not browser.dialogs


def test_arrow_keys_walk_units(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    page = browser.open(base + PAGES["unit"])
    page.keyboard.press("ArrowRight")
    page.wait_for_url(re.compile(r"/REPO/tiny-alex/conv2/unit-0004\.html$"))
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(re.compile(r"/REPO/tiny-alex/conv2/unit-0003\.html$"))
    page = browser.open(base + "tiny-alex/conv2/unit-0000.html")
    page.keyboard.press("ArrowLeft")  # the first unit has no previous one: nothing happens
    page.wait_for_timeout(300)
    assert page.url.endswith("/unit-0000.html")
    assert not browser.errors


def test_xss_class_name_is_inert_text(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    for path in (PAGES["index"], PAGES["layer"], PAGES["network"]):
        page = browser.open(base + path)
        assert page.get_by_text(XSS_CLASS, exact=True).first.is_visible()
        assert page.locator('img[src="x"]').count() == 0
        assert page.evaluate("document.title").startswith(("Fixture atlas <script>", "tiny-alex"))
    assert not browser.dialogs


def _visible(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("""Array.from(document.querySelectorAll('#tiles > li'))
        .filter(t => !t.hidden)
        .map(t => ({unit: +t.dataset.unit, purity: +t.dataset.purity, klass: t.dataset.class}))""")


def test_tiles_sort_and_filter(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    page = browser.open(base + PAGES["layer"])
    assert [t["unit"] for t in _visible(page)] == list(range(12))

    page.select_option("#tile-sort", "purity")
    purities = [t["purity"] for t in _visible(page)]
    assert purities == sorted(purities, reverse=True)
    page.select_option("#tile-sort", "class")
    classes = [t["klass"].lower() for t in _visible(page)]
    assert classes == sorted(classes)

    page.fill("#tile-filter", "circle")
    shown = _visible(page)
    assert shown and all("circle" in t["klass"] for t in shown)
    assert page.locator("#tile-count").text_content() == f"{len(shown)} of 12 units"

    page.fill("#tile-filter", "#7")
    assert [t["unit"] for t in _visible(page)] == [7]

    page.fill("#tile-filter", "")
    page.locator("#tile-purity").fill("60")
    assert all(t["purity"] >= 0.6 for t in _visible(page))
    assert page.locator("#tile-purity-out").text_content() == "60%"

    page.fill("#tile-filter", "no such class")
    assert _visible(page) == []
    assert page.locator("#tile-empty").is_visible()
    assert not browser.errors


def test_charts_render_from_file_urls(browser: Browser, served: tuple[str, Path]) -> None:
    _base, site = served
    page = browser.open((site / "tiny-alex/conv2/index.html").as_uri())
    assert page.locator("#fig-preference .main-svg").count() >= 1
    assert not browser.errors, browser.errors


def test_diff_page_switches_the_preference_chart(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    page = browser.open(base + PAGES["diff"])
    assert page.locator("#fig-diff-overlap g.point").count() == 4  # one bar per layer
    assert page.locator("#fig-diff-pref .main-svg").count() >= 1
    before = page.locator("#fig-diff-pref .xtick text").all_text_contents()
    page.select_option("#pref-layer", label="prob")
    page.wait_for_function(
        "document.getElementById('fig-diff-pref').getAttribute('data-figure') === 'fig-diff-pref-3-data'"
    )
    page.wait_for_timeout(200)
    after = page.locator("#fig-diff-pref .xtick text").all_text_contents()
    assert after[0] == "circle" and after != before  # prob's epoch-2 favours circles (fixture rule)
    assert XSS_CLASS in after and page.locator('img[src="x"]').count() == 0
    # Sprites side by side, linked to both atlases' unit pages.
    links = page.locator("#layer-0 .sprite-view a").evaluate_all(
        "els => els.map(e => e.getAttribute('href'))"
    )
    assert (
        "../../tiny-alex/@epoch-1/conv1/unit-0005.html" in links
        and "../../tiny-alex/conv1/unit-0005.html" in links
    )
    assert not browser.errors and not browser.dialogs


def test_evolution_cells_show_rank_one_tiles(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    page = browser.open(base + PAGES["evolution-layer"])
    cells = page.locator(".evo-cell .cell")
    assert cells.count() == 12 * 2 * 2  # 12 units x 2 checkpoints x (patch, deconvnet)
    box = cells.first.bounding_box()
    assert box and box["width"] == pytest.approx(box["height"], abs=1)  # square cells, cut from the sprite
    page.locator(".evo-cell").first.click()
    page.wait_for_url(re.compile(r"/REPO/tiny-alex/@epoch-1/conv2/unit-0000\.html$"))
    assert not browser.errors
