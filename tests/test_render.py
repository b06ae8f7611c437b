"""Render: store → site. Layout, links, escaping, errors, pagination, determinism — no browser, no torch."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import jinja2
import numpy as np
import pytest
from fixture_store import XSS_CLASS, make_fixture_store

from sitegen.errors import RenderError, StoreError
from sitegen.render import SiteReport, check_site, render_site
from sitegen.render.charts import (
    FONT,
    LAYOUTS,
    activation_histogram,
    class_color,
    merge,
    payload,
    plotly_text,
)
from sitegen.render.env import make_env, render_template
from sitegen.render.views import UNITS_PER_PAGE, plan_site
from sitegen.store import Store, codecs

XSS_ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_store(tmp_path_factory.mktemp("fixture") / "store", xss=True)


@pytest.fixture(scope="module")
def rendered(store: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SiteReport]:
    site = tmp_path_factory.mktemp("out") / "site"
    return site, render_site(store, site)


@pytest.fixture(scope="module")
def site(rendered: tuple[Path, SiteReport]) -> Path:
    return rendered[0]


def copy_store(store: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    return dst


def html_files(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


class _Tags(HTMLParser):
    """Collects start tags with their attributes, and the text of <script type=application/json>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.json: dict[str, str] = {}
        self._json_id: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "script" and a.get("type") == "application/json":
            self._json_id = a["id"]

    def handle_data(self, data: str) -> None:
        if self._json_id:
            self.json[self._json_id] = self.json.get(self._json_id, "") + data

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._json_id = None


def _group(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not found"
    return m.group(1)


def tags(path: Path) -> _Tags:
    p = _Tags()
    p.feed(path.read_text(encoding="utf-8"))
    return p


# --- layout ---------------------------------------------------------------------------------------


def test_site_layout_and_report(rendered: tuple[Path, SiteReport]) -> None:
    site, report = rendered
    for rel in [
        ".nojekyll",
        "index.html",
        "assets/style.css",
        "assets/app.js",
        "assets/plotly.min.js",
        "compare/shapes.html",
        "tiny-alex/index.html",
        "tiny-alex/@epoch-1/index.html",
        "tiny-alex/conv1/index.html",
        "tiny-alex/conv1/unit-0000.html",
        "tiny-alex/conv1/unit-0000.webp",
        "tiny-alex/@epoch-1/conv2/unit-0011.html",
        "tiny-alex/filters.png",
        "tiny-vgg/prob/unit-0005.html",
        "tiny-vgg/fc6/unit-0011.html",
    ]:
        assert (site / rel).is_file(), rel
    # fc6 shows 12 of its 16 units: no pages for the others; the last checkpoint has no @ folder.
    assert not (site / "tiny-vgg/fc6/unit-0012.html").exists()
    assert not (site / "tiny-alex/@epoch-2").exists()
    assert list(site.parent.iterdir()) == [site], "no temp folders left beside the site"
    files = [p for p in site.rglob("*") if p.is_file()]
    assert report.pages == len(html_files(site))
    assert report.files == len(files)
    assert report.bytes == sum(p.stat().st_size for p in files)
    assert report.seconds > 0


def test_every_link_and_image_resolves(site: Path) -> None:
    problems = check_site(site)
    assert not problems, "\n".join(map(str, problems))


def test_only_referenced_store_files_are_copied(site: Path) -> None:
    referenced: set[Path] = set()
    for page in html_files(site):
        for _tag, a in tags(page).tags:
            for key in ("src", "href"):
                if a.get(key, "").endswith((".png", ".webp")):
                    referenced.add((page.parent / a[key]).resolve())
            for url in re.findall(r"url\('([^']+)'\)", a.get("style", "")):
                referenced.add((page.parent / url).resolve())
    images = {p.resolve() for pattern in ("*.png", "*.webp") for p in site.rglob(pattern)}
    assert images == referenced


def test_one_shared_plotly_and_page_relative_urls(site: Path) -> None:
    copies = list(site.rglob("plotly*.js"))
    assert [p.relative_to(site).as_posix() for p in copies] == ["assets/plotly.min.js"]
    for page in html_files(site):
        text = page.read_text(encoding="utf-8")
        assert '<link rel="icon" href="data:,">' in text
        assert "cdn." not in text and "://" not in text.replace("http://www.w3.org", ""), page
        assert not re.search(r'(href|src)="/', text), page
        if page.name == "404.html":
            continue  # self-contained: test_404_page_is_self_contained_and_finds_the_atlas_root
        depth = len(page.relative_to(site).parts) - 1
        assert f'src="{"../" * depth}assets/app.js"' in text
        has_figure = "data-figure=" in text
        assert (f'src="{"../" * depth}assets/plotly.min.js"' in text) == has_figure, page


def test_every_img_has_size_and_is_lazy(site: Path) -> None:
    for page in html_files(site):
        for tag, a in tags(page).tags:
            if tag == "img":
                assert a.get("width", "").isdigit() and a.get("height", "").isdigit(), (page, a)
                assert a.get("loading") == "lazy", (page, a)
                assert a.get("alt"), (page, a)


# --- escaping -------------------------------------------------------------------------------------


def test_user_strings_are_escaped_everywhere(site: Path) -> None:
    for page in html_files(site):
        text = page.read_text(encoding="utf-8")
        assert "<img src=x" not in text, page
        assert "<script>alert" not in text, page
    index = (site / "index.html").read_text(encoding="utf-8")
    assert XSS_ESCAPED in index
    assert "Fixture atlas &lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt; &amp; co" in index


def test_plotly_text_is_escaped_data(site: Path) -> None:
    """Plotly renders some HTML in text: the class name must reach it as entities, not as a tag."""
    parsed = tags(site / "tiny-alex/index.html")
    fig = json.loads(parsed.json["fig-overall-data"])
    labels = fig["data"][0]["x"]
    assert plotly_text(XSS_CLASS) in labels
    assert not any("<" in x for x in labels)
    assert plotly_text("a<b>&c") == "a&lt;b&gt;&amp;c"


def _chip_colour(site: Path, attrs: dict[str, str]) -> str:
    """A chip's colour: inline (``--c:…``) or, issue 13, its class's rule in the site's style.css."""
    if "style" in attrs:
        return _group(r"--c:([^;]+)", attrs["style"])
    css = (site / "assets/style.css").read_text(encoding="utf-8")
    rules = dict(re.findall(r"\.(c\d+)\{--c:([^}]+)\}", css))
    (name,) = [c for c in attrs["class"].split() if c in rules]
    return rules[name]


def test_class_colours_match_between_chips_and_charts(site: Path) -> None:
    parsed = tags(site / "tiny-alex/conv1/index.html")
    fig = json.loads(parsed.json["fig-preference-data"])
    bar = fig["data"][0]
    chips = {  # a span, or a link to the class page (issue 15)
        a["title"].removesuffix(": class page"): _chip_colour(site, a)
        for t, a in parsed.tags
        if t in ("span", "a") and "chip" in a.get("class", "").split()
    }
    bars = {
        name.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"): colour
        for name, colour in zip(bar["x"], bar["marker"]["color"], strict=True)
    }
    assert set(chips) == set(bars)  # every class appears as a chip (tiles, top/bottom lists) and a bar
    assert chips == bars
    assert class_color(0) != class_color(1)
    assert len({class_color(i) for i in range(160)}) > 150


# --- content --------------------------------------------------------------------------------------


def test_network_page_sections(site: Path) -> None:
    text = (site / "tiny-alex/index.html").read_text(encoding="utf-8")
    figures = set(re.findall(r'data-figure="([^"]+)-data"', text))
    assert {"fig-overall", "fig-confusion", "fig-per-class", "fig-training"} <= figures
    # The techniques' figures (tests/test_render_techniques.py) exist only where the manifest lists them.
    epoch1 = (site / "tiny-alex/@epoch-1/index.html").read_text(encoding="utf-8")
    assert set(re.findall(r'data-figure="([^"]+)-data"', epoch1)) == {
        "fig-overall",
        "fig-confusion",
        "fig-per-class",
        "fig-training",
    }
    for layer in ("conv1", "conv2", "fc6", "prob"):
        assert f'href="{layer}/index.html"' in text
    assert text.count('class="summary-row') == 5  # 4 layers + Overall
    assert "filters.png" in text and "actmaps/" in text
    assert 'href="@epoch-1/index.html"' in text  # checkpoint tabs
    vgg = (site / "tiny-vgg/index.html").read_text(encoding="utf-8")
    assert "fig-training" not in vgg  # no training history: no chart, no empty card


def test_every_section_agrees_on_a_probe_images_class_and_verdict(site: Path) -> None:
    """Issue 14: activation maps said "scribble · missed" where Grad-CAM said "circle · correct".

    Every section that shows a probe image (activation maps, Grad-CAM, occlusion) marks it with
    data-probe / data-true / data-verdict; the true class must also be the one the image's alt text
    names (the dataset's label), including the image whose actmaps.json label is -1 ("not given").
    """
    for page in ("tiny-alex/index.html", "tiny-vgg/index.html", "tiny-alex/@epoch-1/index.html"):
        parsed = tags(site / page).tags
        alt_class = {
            int(m.group(1)): m.group(2)
            for t, a in parsed
            if t == "img" and (m := re.fullmatch(r"probe image (\d+) \((.*)\)", a.get("alt", "")))
        }
        said: dict[int, set[tuple[str, str]]] = {}
        for _t, a in parsed:
            if "data-probe" in a:
                said.setdefault(int(a["data-probe"]), set()).add((a["data-true"], a["data-verdict"]))
        assert said, page
        for idx, claims in said.items():
            assert len(claims) == 1, (page, idx, claims)
            assert next(iter(claims))[0] == alt_class[idx], (page, idx)
        if page == "tiny-alex/index.html":
            counts = [sum(1 for _t, a in parsed if a.get("data-probe") == str(i)) for i in said]
            assert max(counts) >= 3, "activation maps, Grad-CAM and occlusion share a probe image"
    first = tags(site / "tiny-vgg/index.html").tags
    actmap = next(a for t, a in first if t == "article" and "data-probe" in a)
    assert (actmap["data-probe"], actmap["data-true"]) == ("0", "circle")  # stored label -1


def test_unit_page_navigation_and_rf_box(site: Path, store: Path) -> None:
    first = (site / "tiny-alex/conv2/unit-0000.html").read_text(encoding="utf-8")
    assert 'rel="next"' in first and 'href="unit-0001.html"' in first and 'rel="prev"' not in first
    last = (site / "tiny-alex/fc6/unit-0011.html").read_text(encoding="utf-8")
    assert 'rel="prev"' in last and 'rel="next"' not in last
    # The rank-1 RF box is the stored box scaled to percent of the input size.
    boxes = Store(store).read_arrays("tiny-alex", "epoch-2", "mined")["conv2/boxes"]
    t, left, b, r = boxes[0, 0].tolist()
    # (the first class="rf" box of the page is the empirical RF's: look in the top-image entries)
    style = _group(r'class="rf" style="([^"]+)"', first.split('<section class="entries">')[1])
    assert (
        style == f"top:{100 * t / 48:.2f}%;left:{100 * left / 48:.2f}%;height:{100 * (b - t) / 48:.2f}%;"
        f"width:{100 * (r - left) / 48:.2f}%"
    )
    # Sprite cells: patches then deconvnet, positioned in percent of the 6 x 3 grid; the sprite, its
    # size and extent (last column 5, last row 2) are named once, in the page's own rule (url() resolves
    # against the page). Issue 13: style.css places each cell by its entry's rank and its panel's class
    # (p1: the second panel); test_browser checks the positions that gives.
    rule = ".entries .cell{background-image:url('unit-0000.webp');background-size:600% 300%;--nx:5;--ny:2}"
    assert rule in first
    assert first.count('<div class="cell px" role="img" aria-label="patch of image') == 9
    assert first.count('<div class="cell px p1" role="img" aria-label="deconvnet of image') == 9
    assert "background-position" not in first
    assert first.count("url('unit-0000.webp')") == 1  # not once per cell


def test_diff_seam_is_empty_until_the_diff_stage(store: Path, site: Path) -> None:
    plan = plan_site(Store(store))
    index = next(p for p in plan.pages if p.path == "index.html")
    assert index.context["diffs"] == ()
    assert "diff/" not in (site / "index.html").read_text(encoding="utf-8")


def test_progress_reports_every_page(store: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    report = render_site(store, tmp_path / "site", progress=lambda i, n: calls.append((i, n)))
    assert calls == [(i, report.pages) for i in range(1, report.pages + 1)]


def test_render_is_deterministic(store: Path, site: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    render_site(store, again)
    for page in html_files(site):
        assert page.read_bytes() == (again / page.relative_to(site)).read_bytes(), page


def test_pagination_keeps_layer_pages_small(tmp_path: Path) -> None:
    n = UNITS_PER_PAGE + 44
    store = make_fixture_store(
        tmp_path / "store", n_units={"fc6": n}, shown={"fc6": n}, distinct_sprites=7, networks=("tiny-vgg",)
    )
    site = tmp_path / "site"
    render_site(store, site)
    folder = site / "tiny-vgg/fc6"
    pages = [folder / "index.html", folder / "page-2.html"]
    assert not (folder / "page-3.html").exists()
    seen: list[int] = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert len(text.encode()) < 2_000_000
        seen += [int(u) for u in re.findall(r'<li class="tile" data-unit="(\d+)"', text)]
        pager = _group(r'<nav class="pager"[^>]*>(.*?)</nav>', text)
        assert re.findall(r'href="([^"]+)"', pager) == ["index.html", "page-2.html"]
    assert seen == list(range(n))
    assert len(re.findall(r'class="tile"', pages[0].read_text(encoding="utf-8"))) == UNITS_PER_PAGE
    # A unit's "all of fc6" link goes to the page that holds its tile.
    assert 'href="page-2.html">all of fc6' in (folder / f"unit-{n - 1:04d}.html").read_text(encoding="utf-8")
    assert 'href="index.html">all of fc6' in (folder / "unit-0000.html").read_text(encoding="utf-8")
    assert not (site / "compare").exists()  # one network: nothing to compare
    assert not check_site(site)


def test_optional_artifacts_may_be_absent(store: Path, tmp_path: Path) -> None:
    """No sprites for a layer, no filters, no activation maps, a network without atlas pages: all render."""
    st = Store(copy_store(store, tmp_path))
    m = st.read_manifest("tiny-alex", "epoch-2")
    st.write_manifest(
        m.model_copy(
            update={
                "sprites": {k: v for k, v in m.sprites.items() if k != "prob"},
                "filters": None,
                "activation_maps": False,
            }
        )
    )
    vgg = st.read_network("tiny-vgg")
    st.write_network(
        vgg.model_copy(
            update={"checkpoints": [c.model_copy(update={"atlas": False}) for c in vgg.checkpoints]}
        )
    )
    site = tmp_path / "site"
    render_site(st.root, site)
    assert not check_site(site)
    net = (site / "tiny-alex/index.html").read_text(encoding="utf-8")
    assert 'id="filters"' not in net and 'id="actmaps"' not in net
    prob = (site / "tiny-alex/prob/index.html").read_text(encoding="utf-8")
    assert "tile-thumbs" in prob and "unit-0000.webp" not in prob  # probe images stand in for the sprite
    assert "background-image" not in (site / "tiny-alex/prob/unit-0000.html").read_text(encoding="utf-8")
    assert not (site / "tiny-vgg").exists() and not (site / "compare").exists()
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "No checkpoint of this network has atlas pages." in index


# --- errors and safety ------------------------------------------------------------------------------


def test_render_never_imports_torch(store: Path, tmp_path: Path) -> None:
    assert Store(store).read_manifest("tiny-alex", "epoch-2").techniques  # the technique readers run too
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from sitegen.render import render_site
        from sitegen.store import Store
        listed = Store(Path({str(store)!r})).read_manifest("tiny-alex", "epoch-2").techniques
        render_site(Path({str(store)!r}), Path({str(tmp_path / "site")!r}))
        bad = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision")))
        assert not bad, bad
        assert all(f"sitegen.render.sections.{{k}}" in sys.modules for k in listed)  # each listed kind drew
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _expect_one_line(exc: pytest.ExceptionInfo[BaseException], *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for n in needles:
        assert n in msg, msg


def test_missing_sprite_is_one_line_and_keeps_the_old_site(store: Path, tmp_path: Path) -> None:
    broken = copy_store(store, tmp_path)
    site = tmp_path / "out" / "site"
    render_site(broken, site)
    before = (site / "index.html").read_bytes()
    (broken / "networks/tiny-vgg/final/units/conv2/unit-0005.webp").unlink()
    with pytest.raises(RenderError) as exc:
        render_site(broken, site)
    _expect_one_line(exc, "unit-0005.webp", "rerun `sitegen build`")
    assert (site / "index.html").read_bytes() == before
    assert sorted(p.name for p in site.parent.iterdir()) == ["site"], "temp folder cleaned up"


def test_missing_record_or_array_is_one_line(store: Path, tmp_path: Path) -> None:
    broken = copy_store(store, tmp_path)
    (broken / "networks/tiny-alex/epoch-1/classes.npz").unlink()
    with pytest.raises(StoreError) as exc:
        render_site(broken, tmp_path / "site")
    _expect_one_line(exc, "classes.npz", "missing")

    broken2 = copy_store(store, tmp_path / "b")
    path = broken2 / "networks/tiny-vgg/final/classes.npz"
    arrays = codecs.read_npz(path)
    del arrays["conv2/purity"]
    codecs.write_npz(path, arrays)
    with pytest.raises(RenderError) as exc2:
        render_site(broken2, tmp_path / "site2")
    _expect_one_line(exc2, "conv2/purity", "classes.npz")

    with pytest.raises(StoreError) as exc3:
        render_site(tmp_path / "nowhere", tmp_path / "site3")
    _expect_one_line(exc3, "build.json")


def test_inconsistent_store_is_a_clear_error(store: Path, tmp_path: Path) -> None:
    broken = copy_store(store, tmp_path)
    actmaps = broken / "networks/tiny-vgg/final/actmaps.json"
    codecs.write_json(actmaps, {"format": 99, "images": []})
    with pytest.raises(RenderError) as exc:
        render_site(broken, tmp_path / "site")
    _expect_one_line(exc, "actmaps format 99")

    codecs.write_json(actmaps, {"format": 1, "images": [{"index": 0}]})
    with pytest.raises(RenderError) as exc2:
        render_site(broken, tmp_path / "site")
    _expect_one_line(exc2, "actmaps.json: malformed")

    broken2 = copy_store(store, tmp_path / "b")
    codecs.write_webp(
        broken2 / "networks/tiny-vgg/final/units/conv1/unit-0000.webp", np.zeros((5, 5, 3), np.uint8)
    )
    with pytest.raises(RenderError) as exc3:
        render_site(broken2, tmp_path / "site")
    _expect_one_line(exc3, "sprite is 5x5 px", "needs 96x48")


def test_strict_undefined_names_the_template(tmp_path: Path) -> None:
    env = make_env()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    with pytest.raises(RenderError) as exc:
        render_template(env, "unit.html", {"root": "", "here": ""})
    _expect_one_line(exc, "unit.html", "is undefined")


def test_refuses_to_replace_a_folder_that_is_not_a_site(store: Path, tmp_path: Path) -> None:
    target = tmp_path / "docs"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    with pytest.raises(RenderError) as exc:
        render_site(store, target)
    _expect_one_line(exc, "not a sitegen site")
    assert (target / "thesis.tex").read_text() == "precious"


def test_rerender_replaces_the_previous_site(store: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    render_site(store, site)
    (site / "stale.html").write_text("old")
    render_site(store, site)
    assert not (site / "stale.html").exists()
    assert (site / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


# --- the link checker itself ----------------------------------------------------------------------


def test_link_checker_reports_each_kind_of_problem(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "sub/index.html").write_text('<p id="here">x</p>')
    (tmp_path / "index.html").write_text(
        '<a href="sub/index.html#here">ok</a><a href="#top">bad fragment</a>'
        '<a href="missing.html">missing</a><img src="/a.png" width="1" height="1">'
        '<img src="a.png"><a href="sub/">folder</a><a href="../outside.html">out</a>'
        '<div style="background-image:url(\'nope.png\')"></div><a href="https://example.org/">external</a>'
    )
    got = {(p.url, p.reason.split(" ")[0]) for p in check_site(tmp_path)}
    assert got == {
        ("#top", "no"),
        ("missing.html", "missing"),
        ("/a.png", "root-absolute"),
        ("a.png", "<img>"),
        ("sub/", "links"),
        ("../outside.html", "leaves"),
        ("nope.png", "missing"),
    }


# --- charts say what they plot (issue 14) ---------------------------------------------------------------


def _shipped_layouts(site: Path) -> dict[str, dict]:
    """The shared figure layouts the site's app.js starts with (issue 13)."""
    first = (site / "assets/app.js").read_text(encoding="utf-8").split("\n", 1)[0]
    assert first.startswith("window.SITEGEN_LAYOUTS=") and first.endswith(";")
    return json.loads(first.removeprefix("window.SITEGEN_LAYOUTS=").removesuffix(";"))


def _figures(site: Path) -> list[tuple[Path, str, dict]]:
    """Every figure of the site as drawn: a page's figure merged into its shared layout, as app.js does."""
    shared = _shipped_layouts(site)
    out = []
    for page in html_files(site):
        for fid, text in tags(page).json.items():
            fig = json.loads(text)
            if "shared" in fig:
                fig["layout"] = merge(shared[fig.pop("shared")], fig["layout"])
            out.append((page, fid, fig))
    return out


def test_shared_layouts_ship_once_and_pages_carry_the_rest(site: Path) -> None:
    assert _shipped_layouts(site) == LAYOUTS
    named = 0
    for page, _fid, fig in _figures(site):
        assert fig["layout"]["font"]["family"] == FONT, page  # the base style reached every figure
    for page in html_files(site):
        for text in tags(page).json.values():
            named += '"shared":' in text
            assert FONT not in text.replace("\\u0027", "'"), page  # ... without being repeated
    assert named > 20
    hist = activation_histogram(0.0, 3.0, [1, 5, 2], threshold=0.5)
    sent = payload(hist)
    assert sent["shared"] == "activation" and set(sent["layout"]) == {"shapes"}
    assert sent["data"] == hist["data"]
    assert merge(LAYOUTS["activation"], sent["layout"]) == hist["layout"]
    assert payload(activation_histogram(0.0, 3.0, [1, 5, 2], height=300))["layout"] == {"height": 300}
    odd = {"data": [], "layout": {"height": 100}}  # lacks keys of the base layout: embedded whole
    assert payload(odd) == odd


def test_every_chart_names_its_axes_and_hovers(site: Path) -> None:
    figures = _figures(site)
    assert len(figures) > 20
    for page, fid, fig in figures:
        layout = fig["layout"]
        used = {(t.get("xaxis", "x"), t.get("yaxis", "y")) for t in fig["data"]}
        axes = {a for pair in used for a in pair}
        if any(t.get("yaxis") == "y2" for t in fig["data"]):
            axes.add("y2")
        for ax in axes:
            spec = layout.get(f"{ax[0]}axis{ax[1:]}", {})
            if spec.get("showticklabels") is False:
                continue  # image panels (occlusion): no axis to name
            title = spec.get("title", {}).get("text", "")
            assert title.strip(), (page, fid, ax)
        for t in fig["data"]:
            if t.get("hoverinfo") == "skip":
                continue
            hover = t.get("hovertemplate", "")
            assert hover and "%{" in hover, (page, fid, t.get("name"))


def test_overall_preference_is_a_mean_share_and_says_so(site: Path, store: Path) -> None:
    fig = json.loads(tags(site / "tiny-alex/index.html").json["fig-overall-data"])
    bar = fig["data"][0]
    assert sum(bar["y"]) == pytest.approx(100, abs=0.05)  # four layers' shares, averaged, in %
    assert fig["layout"]["yaxis"]["title"]["text"] == "mean share of a layer's score (%)"
    assert "mean over 4 layers" in bar["hovertemplate"] and "count" not in bar["hovertemplate"]
    classes = codecs.read_npz(store / "networks/tiny-alex/epoch-2/classes.npz")
    expected = np.sort(classes["overall/weighted"])[::-1] / 4 * 100
    np.testing.assert_allclose(bar["y"], expected, atol=1e-3)
    layer = json.loads(tags(site / "tiny-alex/conv1/index.html").json["fig-preference-data"])
    assert layer["layout"]["yaxis"]["title"]["text"] == "rank-weighted score"
    w = np.sort(classes["conv1/weighted"])[::-1]
    np.testing.assert_allclose(layer["data"][0]["y"], w, atol=0.01)
    shares = [c[1] for c in layer["data"][0]["customdata"]]
    np.testing.assert_allclose(shares, np.round(100 * w / w.sum(), 1))


# --- issue 14, item 10: whole-image patches once, output units by class, samples, 404 ------------------


def _cells(page: Path) -> list[str]:
    return re.findall(r'<span class="cell-label">([^<]+)</span>', page.read_text(encoding="utf-8"))


def test_unit_pages_show_a_whole_image_patch_once(site: Path) -> None:
    # conv: patch (a crop), reconstruction and the image with its RF box, per top image
    conv = _cells(site / "tiny-alex/conv1/unit-0001.html")
    assert (
        conv.count("patch") == conv.count("deconvnet") == 9 and sum(c.startswith("image") for c in conv) == 9
    )
    # fc6 with a patches panel (tiny-alex) and without one (tiny-vgg): the image once, no "patch"
    for page in ("tiny-alex/fc6/unit-0001.html", "tiny-vgg/fc6/unit-0001.html"):
        cells = _cells(site / page)
        assert "patch" not in cells and cells.count("deconvnet") == 9, page
        assert sum(c.startswith("image") for c in cells) == 9, page
    # the panel is found by name: tiny-vgg's fc6 sprite holds deconvnet alone (3 columns wide)
    vgg = (site / "tiny-vgg/fc6/unit-0001.html").read_text(encoding="utf-8")
    # (issue 13: the panel as a class, p1 = the second; none = the first)
    assert "background-size:300% 300%;--nx:2;--ny:2}" in vgg and '<div class="cell px" role="img"' in vgg
    alex = (site / "tiny-alex/fc6/unit-0001.html").read_text(encoding="utf-8")
    assert "background-size:600% 300%;--nx:5;--ny:2}" in alex
    assert '<div class="cell px p1" role="img"' in alex  # deconvnet = 2nd panel
    assert '<div class="cell px" role="img"' not in alex  # no whole-image patch
    prob = _cells(site / "tiny-alex/prob/unit-0001.html")
    assert prob == [c for c in prob if c.startswith("image")] and len(prob) == 9


def test_a_sprite_without_patches_shows_the_probe_images_on_its_tile(site: Path) -> None:
    text = (site / "tiny-vgg/fc6/index.html").read_text(encoding="utf-8")
    tile = _group(r'(<li class="tile" data-unit="1".*?</li>)', text.replace("\n", " "))
    assert '<span class="tile-grid" style="--cols:3">' in tile
    assert len(re.findall(r'src="\.\./\.\./img/shapes/\d+\.png"', tile)) == 9
    assert 'src="unit-0001.webp"' in tile and 'alt="unit 1: top-9 deconvnet reconstructions"' in tile
    assert "top-9 probe images (left; the whole image is its receptive field)" in text
    alex = (site / "tiny-alex/fc6/index.html").read_text(encoding="utf-8")
    assert "tile-grid" not in alex and "top-9 images&#39; receptive-field patches (left)" in alex


def test_output_units_are_titled_by_their_class(site: Path) -> None:
    for u, name in enumerate(("circle", "square", "triangle", "cross", XSS_ESCAPED, "spiral")):
        text = (site / f"tiny-vgg/prob/unit-{u:04d}.html").read_text(encoding="utf-8")
        assert f"<h1>Unit {u} · {name}</h1>" in text
        assert f"<title>tiny-vgg · prob · unit {u} · {name} · " in text
    # their tiles say it too; fc6 has 16 units for 6 classes: not an output layer
    assert '<span class="uid">#0003 · cross</span>' in (site / "tiny-vgg/prob/index.html").read_text("utf-8")
    assert "<h1>Unit 3</h1>" in (site / "tiny-vgg/fc6/unit-0003.html").read_text(encoding="utf-8")
    assert '<span class="uid">#0003</span>' in (site / "tiny-vgg/fc6/index.html").read_text("utf-8")


def test_a_sampled_layer_says_how_the_sample_was_chosen(site: Path) -> None:
    text = (site / "tiny-vgg/fc6/index.html").read_text(encoding="utf-8")
    assert "12 of the layer&#39;s 16 units have pages" in text
    assert "a random sample drawn once from the build&#39;s seed and the layer&#39;s name" in text
    assert "<dd>12 (a sample)</dd>" in text
    net = (site / "tiny-vgg/index.html").read_text(encoding="utf-8")
    assert "Units “12 of 16”: pages for a sample of the layer&#39;s units, drawn once at random" in net
    conv = (site / "tiny-vgg/conv1/index.html").read_text(encoding="utf-8")
    assert "random sample" not in conv and "(a sample)" not in conv


def test_404_page_is_self_contained_and_finds_the_atlas_root(site: Path) -> None:
    text = (site / "404.html").read_text(encoding="utf-8")
    # served by GitHub Pages at any depth: no page-relative asset may be needed
    assert 'rel="stylesheet"' not in text and "<script src" not in text and "<img" not in text
    assert '<a id="home" href="index.html">' in text
    assert 'content="sitegen' in text and 'class="page-index"' in text  # what the script looks for
    index = (site / "index.html").read_text(encoding="utf-8")
    assert '<meta name="generator" content="sitegen' in index and '<body class="page-index">' in index
