"""The rendered site in a real browser: Debian chromium driven by playwright (shared/RECIPES.md).

The site is served under a sub-path (``/REPO/``, as on GitHub project pages) by a local HTTP server,
so any root-absolute URL would show up as a 404. One browser page is shared by all tests (parsing
plotly.min.js costs seconds). Screenshots of every page kind land in ``test-artifacts/`` (git-ignored),
with one per issue-7 technique section (``technique-*.png``) and, for issue 14, one per page kind at
1920×1080 and at 390×844 (``<kind>-1920.png``, ``<kind>-390.png``), each checked for sideways scrolling.

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
from sitegen.render.views.sprites import sprite_cells
from sitegen.store.manifest import SpriteLayout

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PAGES = {
    "index": "index.html",
    "network": "tiny-alex/index.html",
    "network-epoch-1": "tiny-alex/@epoch-1/index.html",
    "layer": "tiny-alex/conv2/index.html",
    "unit": "tiny-alex/conv2/unit-0003.html",
    "unit-erf": "tiny-alex/conv2/unit-0000.html",
    "compare": "compare/shapes.html",
    "diff": "diff/tiny-alex@epoch-1--tiny-alex@epoch-2/index.html",
    "evolution": "tiny-alex/evolution/index.html",
    "evolution-layer": "tiny-alex/evolution/conv2.html",
    "layer-fc": "tiny-vgg/fc6/index.html",  # a sprite without a patches panel (issue 14)
    "unit-fc": "tiny-vgg/fc6/unit-0001.html",
    "unit-prob": "tiny-vgg/prob/unit-0003.html",
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
    """Serves the site; like GitHub Pages, a missing URL under /REPO/ gets REPO/404.html (status 404)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        page = Path(self.directory) / "REPO" / "404.html"
        if code != 404 or not self.path.startswith("/REPO/") or not page.is_file():
            super().send_error(code, message, explain)
            return
        body = page.read_bytes()
        self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


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
        page.on("requestfailed", self._failed)
        page.on(
            "response", lambda r: self.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
        )
        page.on("dialog", self._dialog)

    def _failed(self, request: Any) -> None:
        # ERR_ABORTED is chromium cancelling a request itself (a lazy image restarted when open() makes
        # it eager, a request in flight at navigation): not a broken site. A missing file shows as an
        # HTTP 404 (the response listener) and a broken image in open()'s naturalWidth check.
        if request.failure != "net::ERR_ABORTED":
            self.errors.append(f"request failed: {request.url} ({request.failure})")

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
    # 4 atlas charts + 5 occlusion maps, the embedding, 3 invariance sweeps, 2 stroke charts
    assert page.locator(".js-plotly-plot .main-svg").count() >= page.locator("[data-figure]").count() == 15
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


# --- the literature's other techniques (issue 7; the fixture writes them for tiny-alex@epoch-2) ----------


def _shot(page: Any, selector: str, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator(selector).screenshot(path=str(ARTIFACTS / f"technique-{name}.png"))


_LOADS = """hrefs => Promise.all(hrefs.map(h => new Promise(done => {
    const i = new Image();
    i.onload = () => done(i.naturalWidth);
    i.onerror = () => done(0);
    i.src = h;
})))"""


def test_network_page_draws_the_techniques(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    page = browser.open(base + PAGES["network"])

    # Grad-CAM: probe image, true-class and predicted-class overlays for one image per class.
    sizes = page.locator("#gradcam img").evaluate_all("els => els.map(i => i.naturalWidth)")
    assert sizes == [48] * 18
    _shot(page, "#gradcam", "gradcam")

    # Occlusion: three heatmaps per image over the probe image (a layout image under each panel).
    types = page.locator("#occlusion .js-plotly-plot").evaluate_all(
        "els => els.map(d => d.data.map(t => t.type))"
    )
    assert types == [["heatmap"] * 3] * 5
    assert page.locator("#occlusion .js-plotly-plot .hm image").count() == 15  # the drawn heatmaps
    hrefs = page.locator("#occlusion .layer-subplot .imagelayer image").evaluate_all(
        "els => els.map(i => i.getAttribute('href'))"
    )
    assert len(hrefs) == 15 and all(re.fullmatch(r"\.\./img/shapes/\d+\.png", h) for h in hrefs), hrefs
    assert page.evaluate(_LOADS, sorted(set(hrefs))) == [48] * len(set(hrefs))
    boxes = page.locator("#occlusion .layer-subplot .imagelayer image").evaluate_all(
        "els => els.map(i => i.getBoundingClientRect().width)"
    )
    assert all(w > 100 for w in boxes), boxes
    _shot(page, "#occlusion", "occlusion")

    # Embedding: one marker per probe image; the XSS class is legend text, not markup.
    assert page.locator("#embedding path.point").count() == 48
    legend = page.locator("#embedding .legendtext").all_text_contents()
    assert len(legend) == 6 and XSS_CLASS in legend
    _shot(page, "#embedding", "embedding")

    # Invariance: translation, rotation, scale; 2 layers x (4 images + mean) + 4 probability lines.
    plots = page.locator("#invariance .js-plotly-plot")
    assert plots.count() == 3
    for i in range(3):
        assert plots.nth(i).locator("g.trace.scatter").count() == 2 * (4 + 1) + 4
        assert plots.nth(i).locator(".cartesianlayer path.js-line").count() == 14
    _shot(page, "#invariance", "invariance")

    # Stroke density: rho per layer for density and complexity, and the overall class scatter.
    assert page.locator("#stroke .js-plotly-plot").count() == 2
    assert page.locator("#fig-stroke-corr path.point").count() == 2 * 4
    assert page.locator("#fig-stroke-overall path.point").count() == 6
    assert XSS_CLASS in page.locator("#fig-stroke-overall .textpoint text").all_text_contents()
    _shot(page, "#stroke", "stroke")

    assert page.locator('img[src="x"]').count() == 0
    assert not browser.errors, browser.errors
    assert not browser.dialogs, browser.dialogs


def test_unit_page_shows_feature_visualization_and_erf(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    page = browser.open(base + PAGES["unit-erf"])
    assert page.locator("img.fv").evaluate("i => i.naturalWidth") == 64
    assert page.locator(".erf img").evaluate("i => i.naturalWidth") == 23  # 17 + 5 - 1 + 2 px map
    img, rf = page.locator(".erf img").bounding_box(), page.locator(".erf .rf").bounding_box()
    assert img and rf
    # The analytic RF (17 px) is the centred square of the 23-px map.
    assert rf["width"] == pytest.approx(img["width"] * 17 / 23, abs=1.5)
    assert rf["x"] - img["x"] == pytest.approx(img["width"] * 3 / 23, abs=1.5)
    assert rf["y"] - img["y"] == pytest.approx(img["height"] * 3 / 23, abs=1.5)
    _shot(page, ".unit-extra", "unit")

    page = browser.open(base + PAGES["unit"])  # unit 3: a feature visualization, no empirical RF
    assert page.locator("img.fv").count() == 1 and page.locator(".erf").count() == 0
    assert not browser.errors, browser.errors


def test_layer_page_feature_visualization_grid(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    page = browser.open(base + PAGES["layer"])
    sizes = page.locator("#featvis .fv-grid img").evaluate_all("els => els.map(i => i.naturalWidth)")
    assert sizes == [64] * 12
    assert page.locator("#fig-stroke path.point").count() == 6
    _shot(page, "#featvis", "featvis")
    _shot(page, "#stroke", "layer-stroke")
    page.locator("#featvis .fv-grid a").nth(3).click()
    page.wait_for_url(re.compile(r"/REPO/tiny-alex/conv2/unit-0003\.html$"))
    assert not browser.errors, browser.errors


# --- issue 14: legible on a projector and on a phone, zoomable, accessible ------------------------------

VIEWPORTS = {"1920": (1920, 1080), "390": (390, 844)}
DEFAULT_VIEWPORT = {"width": 1400, "height": 900}


@pytest.fixture()
def viewport(browser: Browser) -> Iterator[Any]:
    """Set the shared page's viewport for one test; back to the default (and presentation mode off) after."""

    def set_size(width: int, height: int) -> None:
        browser.page.set_viewport_size({"width": width, "height": height})

    try:
        yield set_size
    finally:
        browser.page.set_viewport_size(DEFAULT_VIEWPORT)
        browser.page.evaluate("() => { try { localStorage.removeItem('sitegen-present'); } catch (e) {} }")


_OVERFLOW = """() => Array.from(document.querySelectorAll('main *, header *, footer *'))
    .filter(e => e.getBoundingClientRect().right > innerWidth + 0.5
                 && !e.closest('.scroll-x, .js-plotly-plot'))
    .slice(0, 5)
    .map(e => e.tagName.toLowerCase() + '.' + e.className + ' → '
              + Math.round(e.getBoundingClientRect().right))"""


@pytest.mark.parametrize("size", list(VIEWPORTS))
@pytest.mark.parametrize("kind", [*PAGES, "404"])
def test_screenshot_without_horizontal_overflow(
    browser: Browser, served: tuple[str, Path], viewport: Any, kind: str, size: str
) -> None:
    """Every page kind at 1920×1080 (projector) and 390×844 (phone): nothing scrolls sideways
    (the network page was 459 px wide at 390). The screenshots are for a person to look at."""
    base, _site = served
    viewport(*VIEWPORTS[size])
    page = browser.open(base + PAGES.get(kind, "404.html"))
    width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1], (kind, size, width, page.evaluate(_OVERFLOW))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{kind}-{size}.png"), full_page=True)
    errors = browser.errors
    if kind == "404":  # its script asks http://host/index.html (not the atlas here) before /REPO/
        errors = [e for e in errors if "404" not in e]
    assert not errors, errors


def _px(page: Any, selector: str, prop: str = "width") -> list[float]:
    return page.locator(selector).evaluate_all(f"els => els.map(e => e.getBoundingClientRect().{prop})")


def test_projector_sizes_at_1920(browser: Browser, served: tuple[str, Path], viewport: Any) -> None:
    base, _site = served
    viewport(1920, 1080)
    page = browser.open(base + PAGES["network"])
    # the content column uses the screen (it left 31 % empty)
    main = page.locator("main").bounding_box()
    assert main and main["width"] >= 0.94 * 1920
    assert page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)") >= 17
    # chart ticks and axis titles are readable from the back of the room
    tick = page.locator("#fig-overall .xtick text").first.evaluate("t => parseFloat(t.style.fontSize)")
    title = page.locator("#fig-overall .ytitle").first.evaluate("t => parseFloat(t.style.fontSize)")
    assert tick >= 14 and title >= 15
    assert min(_px(page, "#bias img.tiny")) >= 48  # layer-bias thumbnails (were 28 px)
    assert min(_px(page, "#gradcam img")) >= 190  # Grad-CAM (were 132 px)
    assert min(_px(page, "#actmaps .actmap-layer img")) >= 120
    assert min(_px(page, "#summary .pick-imgs img")) >= 60
    assert (page.locator("#filters img").bounding_box() or {"width": 0})["width"] >= 400
    page = browser.open(base + PAGES["layer"])
    # a tile's sprite holds 2 panels x 3 cells per row: each cell at least 50 px (were ~35)
    sprite = min(_px(page, "#tiles .sprite"))
    assert sprite / 6 >= 50
    assert min(_px(page, "#featvis .fv-grid img")) >= 100  # feature visualizations (were 64 px)
    page = browser.open(base + PAGES["unit-erf"])
    assert (page.locator("img.fv").bounding_box() or {"width": 0})["width"] >= 250
    assert not browser.errors, browser.errors


def test_presentation_mode_enlarges_and_sticks(
    browser: Browser, served: tuple[str, Path], viewport: Any
) -> None:
    base, _site = served
    viewport(1920, 1080)
    page = browser.open(base + PAGES["layer"])
    normal = {
        "root": page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)"),
        "tile": _px(page, "#tiles > li")[0],
        "tick": page.locator("#fig-preference .xtick text").first.evaluate(
            "t => parseFloat(t.style.fontSize)"
        ),
        "chart": _px(page, "#fig-preference", "height")[0],
    }
    assert page.locator("#present-toggle").get_attribute("aria-pressed") == "false"
    page = browser.open(base + PAGES["layer"] + "?present")
    assert page.evaluate("document.documentElement.classList.contains('present')")
    assert page.locator("#present-toggle").get_attribute("aria-pressed") == "true"
    big = {
        "root": page.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)"),
        "tile": _px(page, "#tiles > li")[0],
        "tick": page.locator("#fig-preference .xtick text").first.evaluate(
            "t => parseFloat(t.style.fontSize)"
        ),
        "chart": _px(page, "#fig-preference", "height")[0],
    }
    assert big["root"] >= 1.2 * normal["root"]
    assert big["tile"] >= 1.3 * normal["tile"]
    assert big["tick"] >= 1.3 * normal["tick"]
    assert big["chart"] >= 1.2 * normal["chart"]
    # it sticks: the next page, without ?present, opens in presentation mode too
    page = browser.open(base + PAGES["network"])
    assert page.evaluate("document.documentElement.classList.contains('present')")
    assert min(_px(page, "#gradcam img")) >= 280
    # the toggle turns it off, redraws the charts, and that sticks as well
    page.locator("#present-toggle").click()
    assert not page.evaluate("document.documentElement.classList.contains('present')")
    assert page.locator("#present-toggle").get_attribute("aria-pressed") == "false"
    page.wait_for_function(
        "parseFloat(document.querySelector('#fig-overall .xtick text').style.fontSize) < 16"
    )
    page = browser.open(base + PAGES["layer"])
    assert not page.evaluate("document.documentElement.classList.contains('present')")
    page = browser.open(base + PAGES["layer"] + "?present=0")
    assert not page.evaluate("document.documentElement.classList.contains('present')")
    assert not browser.errors, browser.errors


def _lightbox(page: Any) -> dict[str, Any]:
    return page.evaluate("""() => {
        const box = document.getElementById('lightbox');
        const img = box && box.querySelector('.lb-img');
        return box ? {open: !box.hidden, caption: document.getElementById('lb-cap').textContent,
                      width: img ? img.getBoundingClientRect().width : 0,
                      height: img ? img.getBoundingClientRect().height : 0,
                      role: box.getAttribute('role'), modal: box.getAttribute('aria-modal'),
                      focusInside: box.contains(document.activeElement)} : {open: false};
    }""")


def test_lightbox_enlarges_any_image(browser: Browser, served: tuple[str, Path], viewport: Any) -> None:
    base, _site = served
    viewport(1400, 900)
    page = browser.open(base + PAGES["unit"])
    first = page.locator(".entry .full img").first
    first.click()
    box = _lightbox(page)
    assert box["open"] and box["role"] == "dialog" and box["modal"] == "true" and box["focusInside"]
    assert box["height"] >= 0.6 * 900 or box["width"] >= 0.8 * 1400  # enlarged to the screen
    # the section's 27 pictures, in page order: patch, deconvnet, image of rank 1, then rank 2 ...
    assert box["caption"].startswith("probe image 26 ") and box["caption"].endswith("(3 of 27)")
    # ←/→ move through them (the sprite cells too) and do not leave the unit page
    page.keyboard.press("ArrowLeft")
    moved = _lightbox(page)
    assert moved["caption"] == "deconvnet of image 26, rank 1 (2 of 27)"
    assert moved["width"] >= 0.6 * 900
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert _lightbox(page)["caption"].endswith("(27 of 27)")  # wraps around
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert _lightbox(page)["caption"].endswith("(3 of 27)")
    assert page.url.endswith("/unit-0003.html")
    # Tab stays in the dialog; Esc closes and gives focus back to the image
    for _ in range(4):
        page.keyboard.press("Tab")
        assert _lightbox(page)["focusInside"]
    page.keyboard.press("Escape")
    assert not _lightbox(page)["open"]
    assert page.evaluate("document.activeElement === document.querySelector('.entry .full img')")
    # keyboard only: focus an image, Enter opens it
    page.keyboard.press("Enter")
    assert _lightbox(page)["open"]
    page.locator(".lb-close").click()
    assert not _lightbox(page)["open"]

    # an image inside a link keeps its link and gets a zoom button beside it (layer tiles)
    page = browser.open(base + PAGES["layer"])
    assert page.locator("#tiles .zoom-btn").count() == 12
    page.locator("#tiles > li").first.hover()
    page.locator("#tiles .zoom-btn").first.click()
    box = _lightbox(page)
    assert box["open"] and box["caption"].startswith("unit 0: top-9 patches and deconvnet")
    assert page.url.endswith("/conv2/index.html")
    page.keyboard.press("Escape")
    page.locator("#tiles > li a").first.click()  # the tile itself still opens the unit
    page.wait_for_url(re.compile(r"/REPO/tiny-alex/conv2/unit-0000\.html$"))
    # every image of the network page can be enlarged: by itself or by a zoom button
    page = browser.open(base + PAGES["network"])
    orphans = page.evaluate("""() => Array.from(document.querySelectorAll('main img'))
        .filter(i => !i.classList.contains('zoomable')
                 && !(i.closest('a') && i.closest('a').nextElementSibling
                 && i.closest('a').nextElementSibling.classList.contains('zoom-btn')))
        .map(i => i.alt)""")
    assert orphans == []
    assert not browser.errors, browser.errors


def test_layer_page_opens_with_its_units_and_provenance_closes_pages(
    browser: Browser, served: tuple[str, Path], viewport: Any
) -> None:
    base, _site = served
    viewport(1920, 1080)
    page = browser.open(base + PAGES["layer"])
    order = page.evaluate("Array.from(document.querySelectorAll('main > section[id]')).map(s => s.id)")
    assert order[0] == "units" and order[-1] == "about"
    tile = page.locator("#tiles > li").first.bounding_box()
    assert tile and tile["y"] < 1080  # a unit tile on the first screen
    assert page.locator("nav.toc a[href='#units']").count() == 1
    for kind in ("network", "index"):
        page = browser.open(base + PAGES[kind])
        ids = page.evaluate("Array.from(document.querySelectorAll('main section[id]')).map(s => s.id)")
        assert ids[-1] == "build", (kind, ids)
        build = page.locator("#build").bounding_box()
        first = page.locator("#layers" if kind == "network" else ".networks").bounding_box()
        assert build and first and build["y"] > first["y"] + first["height"], kind  # after the content
        assert first["y"] < 1080, kind  # what people came for is on the first screen
    assert not browser.errors, browser.errors


def _contrast_js() -> str:
    return """sel => {
        const parse = c => {
            // rgb(a)() in 0..255, or color(srgb r g b / a) in 0..1 (what color-mix() computes to)
            const m = c.match(/[\\d.]+/g).map(Number);
            const k = c.startsWith('color(') ? 255 : 1;
            return [m[0] * k, m[1] * k, m[2] * k, m.length > 3 ? m[3] : 1];
        };
        const lin = v => { v /= 255; return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
        const lum = c => 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2]);
        const over = (top, bottom) =>
            [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat([1]);
        function background(el) {
            const layers = [];
            for (let e = el; e; e = e.parentElement) {
                const c = parse(getComputedStyle(e).backgroundColor);
                if (c[3] > 0) { layers.push(c); if (c[3] >= 1) { break; } }
            }
            let bg = [255, 255, 255, 1];
            for (let i = layers.length - 1; i >= 0; i -= 1) { bg = over(layers[i], bg); }
            return bg;
        }
        const shown = Array.from(document.querySelectorAll(sel))
            .filter(e => e.offsetParent && e.textContent.trim());
        return shown.map(e => {
            const bg = background(e);
            const fg = over(parse(getComputedStyle(e).color), bg);
            const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
            return [e.className + ': ' + e.textContent.trim().slice(0, 20), (a + 0.05) / (b + 0.05)];
        });
    }"""


def test_accessible_charts_headings_and_badge_contrast(
    browser: Browser, served: tuple[str, Path], viewport: Any
) -> None:
    base, _site = served
    viewport(1400, 900)
    badges = (
        ".verdict, .chip, .pill, .kicker, .eyebrow, .cell-label, .side-label, .uid, .pur, .grp, .muted, "
        ".hint, .rank-h, .evo-ov, .score, .tabs a, .toc a, .present-toggle"
    )
    for kind in ("network", "layer", "unit", "index", "diff", "compare", "evolution-layer", "unit-fc"):
        page = browser.open(base + PAGES[kind])
        # every chart has an accessible name and a text alternative
        figs = page.locator(".figure").evaluate_all("""els => els.map(d => ({
            role: d.getAttribute('role'), label: d.getAttribute('aria-label') || '',
            desc: (document.getElementById(d.getAttribute('aria-describedby') || '') || {}).textContent
                  || ''}))""")
        for f in figs:
            assert f["role"] == "img" and len(f["label"]) > 10 and len(f["desc"]) > 3, (kind, f)
        # headings never skip a level, and there is one h1
        levels = page.evaluate(
            "Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6')).map(h => +h.tagName[1])"
        )
        assert levels[0] == 1 and levels.count(1) == 1, (kind, levels)
        assert all(b - a <= 1 for a, b in zip(levels, levels[1:], strict=False)), (kind, levels)
        # badges and small labels: WCAG AA contrast for text
        low = [(name, round(r, 2)) for name, r in page.evaluate(_contrast_js(), badges) if r < 4.5]
        assert not low, (kind, low[:8])
    page = browser.open(base + PAGES["network"])
    label = page.locator("#fig-overall").get_attribute("aria-label")
    assert label == "Bar chart: mean share of a layer's score (%) by class, most preferred first"
    assert page.locator("#fig-overall-desc").text_content().startswith("circle: ")
    assert not browser.errors, browser.errors


def test_404_page_links_to_the_atlas_from_any_depth(browser: Browser, served: tuple[str, Path]) -> None:
    base, _site = served
    page = browser.page
    response = page.goto(base + "tiny-alex/conv2/no-such-unit/deeper.html")
    assert response is not None and response.status == 404
    assert page.locator("h1").text_content() == "Page not found"
    page.wait_for_function("document.getElementById('home').getAttribute('href') === '/REPO/index.html'")
    page.locator("#home").click()
    page.wait_for_url(re.compile(r"/REPO/index\.html$"))
    assert page.locator("h1").first.text_content().startswith("Fixture atlas")


def test_unit_page_cells_sit_where_the_sprite_has_them(browser: Browser, served: tuple[str, Path]) -> None:
    """Issue 13 (site size): style.css places each cell (the entry's rank by nth-child, the panel by
    class) exactly where the inline background-position used to: views.sprites.sprite_cells."""
    base, _site = served
    page = browser.open(base + PAGES["unit"])
    shown = page.evaluate(
        """Array.from(document.querySelectorAll('.entries .cell')).map(c => [c.getAttribute('aria-label'),
             getComputedStyle(c).backgroundPosition, getComputedStyle(c).backgroundSize])"""
    )
    layout = SpriteLayout(cell=1, cols=3, rows=3, panels=["patches", "deconvnet"])  # the fixture's conv2
    labels = {"patch": 0, "deconvnet": 1}
    assert len(shown) == 18
    for label, position, size in shown:
        panel, rank = re.fullmatch(r"(\w+) of image \d+, rank (\d+)", label).groups()  # type: ignore[union-attr]
        want = sprite_cells(layout, int(rank) - 1)[labels[panel]]
        got = [float(v) for v in re.findall(r"[\d.]+", position)]
        assert got == pytest.approx([float(v) for v in re.findall(r"[\d.]+", want.position)], abs=0.01), label
        assert size == want.size
    assert not browser.errors


def test_reconstruction_overlays_its_patch_and_the_choice_sticks(
    browser: Browser, served: tuple[str, Path]
) -> None:
    """Issue 14 (4): the unit page says how reconstructions are drawn, and 'Overlay on patch' puts
    each reconstruction in its patch's place (hard-light blend), remembered across pages."""
    base, _site = served
    page = browser.open(base + PAGES["unit"])
    note = page.locator(".recon-note").inner_text()
    assert "mid-grey is no contribution" in note and "0.5 %" in note
    toggle = page.locator("[data-overlay-toggle]")
    assert toggle.get_attribute("aria-pressed") == "false"

    def boxes() -> list[dict[str, float]]:
        return page.evaluate(
            "Array.from(document.querySelector('.entry-imgs').children).slice(0, 2)"
            ".map(e => { const r = e.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width}; })"
        )

    patch, rec = boxes()
    assert rec["x"] > patch["x"], "side by side first"
    toggle.click()
    patch, rec = boxes()
    assert all(abs(rec[k] - patch[k]) < 1 for k in ("x", "y", "w")), "drawn in the patch's place"
    blend = page.evaluate("getComputedStyle(document.querySelector('.cell-wrap.rec')).mixBlendMode")
    assert blend == "hard-light"
    _shot(page, ".entries", "unit-overlay")
    page = browser.open(base + "tiny-alex/conv2/unit-0000.html")
    assert page.locator("[data-overlay-toggle]").get_attribute("aria-pressed") == "true"
    page.keyboard.press("o")
    assert page.locator("[data-overlay-toggle]").get_attribute("aria-pressed") == "false"
    # the magnitude view (DeepVis "deconvnorm"): an SVG filter on the reconstruction cells only
    page.locator("[data-magnitude-toggle]").click()
    filters = page.evaluate(
        "Array.from(document.querySelectorAll('.entry-imgs .cell')).slice(0, 2)"
        ".map(c => getComputedStyle(c).filter)"
    )
    assert filters[0] == "none" and "sg-magnitude" in filters[1], filters
    assert page.locator("filter#sg-magnitude feFuncR").get_attribute("tableValues") == "0 1 0"
    _shot(page, ".entries", "unit-magnitude")
    page.keyboard.press("m")
    assert page.locator("[data-magnitude-toggle]").get_attribute("aria-pressed") == "false"
    assert not browser.errors


# --- activation distributions and unit scores (issue 15) ---------------------------------------------


@pytest.fixture(scope="session")
def served_dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The fixture site with ``distribution.json`` on tiny-alex@epoch-2 (fixture_store.add_distribution)."""
    from fixture_store import add_distribution

    root = tmp_path_factory.mktemp("www-dist")
    store = add_distribution(make_fixture_store(tmp_path_factory.mktemp("dist-store") / "store"))
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


def test_distribution_histogram_and_interval_samples(browser: Browser, served_dist: tuple[str, Path]) -> None:
    base, _site = served_dist
    page = browser.open(base + "tiny-alex/conv2/unit-0003.html")
    fig = page.locator("#fig-activation")
    assert fig.get_attribute("role") == "img"
    assert "probe images by the unit's maximum per image" in (fig.get_attribute("aria-label") or "")
    assert page.locator("#fig-activation g.point").count() == 30  # one bar per bin
    titles = page.locator("#fig-activation .g-xtitle, #fig-activation .g-ytitle").all_text_contents()
    assert titles == ["the unit's maximum per image", "probe images"]
    assert page.locator("#intervals .interval").count() == 5
    assert page.locator("#intervals .iv-img img").count() == 15
    assert page.locator(".dist-stats dt").all_text_contents()[:3] == ["density", "mean", "max"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "unit-distribution.png"), full_page=True)
    assert not browser.errors


def _order(page: Any, key: str) -> list[tuple[int, float]]:
    return page.evaluate(f"""Array.from(document.querySelectorAll('#tiles > li'))
        .filter(t => !t.hidden)
        .map(t => [+t.dataset.unit, t.dataset.{key} === '' ? NaN : +t.dataset.{key}])""")


def test_layer_grid_sorts_by_scores_and_keeps_them_in_the_url(
    browser: Browser, served_dist: tuple[str, Path]
) -> None:
    base, _site = served_dist
    page = browser.open(base + "tiny-alex/conv2/index.html")
    assert page.locator("#fig-density g.point").count() == 21  # dead, rare (<5 %), 5–10 % … 95–100 %
    assert page.locator(".uflag.dead").all_text_contents() == ["0"]
    page.select_option("#tile-sort", "selectivity")
    sel = [v for _u, v in _order(page, "selectivity")]
    assert sel == sorted(sel, reverse=True) and len(sel) == 12
    assert page.evaluate("location.hash") == "#sort=selectivity"
    page.fill("#tile-filter", "circle")
    assert page.evaluate("location.hash") == "#sort=selectivity&class=circle"
    want = _order(page, "selectivity")
    assert want and all(
        "circle" in k
        for k in page.evaluate(
            "Array.from(document.querySelectorAll('#tiles > li:not([hidden])')).map(t => t.dataset.class)"
        )
    )
    # a shared link restores the view: reload, and open the URL fresh
    page.reload()
    page.wait_for_load_state("load")
    assert page.locator("#tile-sort").input_value() == "selectivity"
    assert page.locator("#tile-filter").input_value() == "circle"
    assert _order(page, "selectivity") == want
    page = browser.open(base + "tiny-alex/conv2/index.html#sort=density-asc&flag=quiet")
    shown = _order(page, "density")
    assert [u for u, _v in shown] == [0, 1] and shown[0][1] == 0  # dead first, then rare
    page.select_option("#tile-flag", "")
    page.select_option("#tile-sort", "unit")
    assert page.evaluate("location.hash") == ""
    page = browser.open(base + "tiny-alex/conv2/index.html#sort=entropy")
    ent = [v for _u, v in _order(page, "entropy")]
    assert ent == sorted(ent)
    page = browser.open(base + "tiny-alex/conv2/index.html#sort=selectivity")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "layer-distribution.png"), full_page=True)
    assert not browser.errors
