"""Render of the literature's other techniques (issue 7): Grad-CAM, occlusion, embedding, invariance,
stroke density, feature visualization, empirical RF — from the fixture store, no browser, no torch.

The fixture (tests/fixture_store.py) writes all seven technique files for ``tiny-alex@epoch-2`` only:
``tiny-alex@epoch-1`` and ``tiny-vgg`` cover the pages without them.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fixture_store import (
    ERF_LAYER,
    ERF_OCCLUDER,
    ERF_UNITS,
    FEATVIS_LAYER,
    INVARIANCE_IMAGES,
    OCCLUSION_IMAGES,
    PER_CLASS_PROBE,
    TECHNIQUES,
    XSS_CLASS,
    make_fixture_store,
    probe_picks,
)
from test_render import tags

from sitegen.errors import RenderError
from sitegen.render import charts, check_site, render_site
from sitegen.render.charts import plotly_text
from sitegen.store import Store, codecs

CK = "networks/tiny-alex/epoch-2"
N_CLASSES = 6
N_PROBE = N_CLASSES * PER_CLASS_PROBE


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_store(tmp_path_factory.mktemp("tech") / "store", xss=True)


@pytest.fixture(scope="module")
def site(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("tech-out") / "site"
    render_site(store, site)
    return site


def _doc(store: Path, name: str) -> dict[str, Any]:
    return codecs.read_json(store / CK / f"{name}.json")


def _figures(page: Path) -> dict[str, dict[str, Any]]:
    return {k.removesuffix("-data"): json.loads(v) for k, v in tags(page).json.items()}


# --- the fixture itself -----------------------------------------------------------------------------


def test_only_the_last_alex_checkpoint_has_techniques(store: Path) -> None:
    st = Store(store)
    assert st.read_manifest("tiny-alex", "epoch-2").techniques == list(TECHNIQUES)
    assert st.read_manifest("tiny-alex", "epoch-1").techniques == []
    assert st.read_manifest("tiny-vgg", "final").techniques == []
    for name in TECHNIQUES:
        assert _doc(store, name)["format"] == 1
    assert not (store / "networks/tiny-alex/epoch-1/gradcam.json").exists()


def test_fixture_without_techniques(tmp_path: Path) -> None:
    store = make_fixture_store(tmp_path / "store", networks=("tiny-alex",), techniques=False)
    assert Store(store).read_manifest("tiny-alex", "epoch-2").techniques == []
    render_site(store, tmp_path / "site")
    assert 'id="gradcam"' not in (tmp_path / "site/tiny-alex/index.html").read_text(encoding="utf-8")


# --- network page -------------------------------------------------------------------------------------


def test_network_page_shows_every_technique(site: Path) -> None:
    page = site / "tiny-alex/index.html"
    text = page.read_text(encoding="utf-8")
    for section in ("gradcam", "occlusion", "embedding", "invariance", "stroke"):
        assert f'<section class="card" id="{section}">' in text, section
        assert f'href="#{section}"' in text, section  # table of contents
    figures = set(re.findall(r'data-figure="([^"]+)-data"', text))
    assert figures == {
        "fig-overall",
        "fig-confusion",
        "fig-per-class",
        "fig-training",
        *(f"fig-occlusion-{j}" for j in range(OCCLUSION_IMAGES)),
        "fig-embedding",
        "fig-invariance-translation",
        "fig-invariance-rotation",
        "fig-invariance-scale",
        "fig-stroke-corr",
        "fig-stroke-overall",
    }
    # The other atlas checkpoint and the other network have none of it.
    for other in ("tiny-alex/@epoch-1/index.html", "tiny-vgg/index.html", "tiny-vgg/conv2/index.html"):
        t = (site / other).read_text(encoding="utf-8")
        assert "fig-occlusion" not in t and 'id="gradcam"' not in t and 'id="featvis"' not in t, other
        assert 'id="stroke"' not in t and "fig-stroke" not in t, other


def test_gradcam_rows_show_the_probe_image_and_both_overlays(site: Path, store: Path) -> None:
    doc = _doc(store, "gradcam")
    picks = [e["index"] for e in doc["images"]]
    labels = np.load(store / "datasets/shapes/labels.npy")
    assert picks == probe_picks(labels, N_CLASSES) == [c * PER_CLASS_PROBE for c in range(N_CLASSES)]
    page = site / "tiny-alex/index.html"
    imgs = [a["src"] for t, a in tags(page).tags if t == "img" and a["src"].startswith("gradcam/")]
    assert imgs == [f"gradcam/{i}-{w}.png" for i in picks for w in ("true", "pred")]
    for src in imgs:
        assert (site / "tiny-alex" / src).read_bytes() == (store / CK / src).read_bytes()
    text = page.read_text(encoding="utf-8")
    gc = text[text.index('id="gradcam"') : text.index('id="occlusion"')]
    assert gc.count('<figure class="gc" ') == N_CLASSES
    assert "true: &lt;img src=x onerror=alert(1)&gt;" in gc  # the XSS class, escaped


def test_occlusion_figures_are_heatmaps_over_the_image(site: Path, store: Path) -> None:
    doc = _doc(store, "occlusion")
    figs = _figures(site / "tiny-alex/index.html")
    side = len(doc["rows"])
    assert side == (48 - doc["size"]) // doc["stride"] + 1
    for j, e in enumerate(doc["images"]):
        fig = figs[f"fig-occlusion-{j}"]
        assert [t["type"] for t in fig["data"]] == ["heatmap"] * 3
        for t in fig["data"]:
            assert len(t["z"]) == side and all(len(row) == side for row in t["z"])
            assert t["x"] == doc["cols"] and t["y"] == doc["rows"]
        # Issue 14: the drop on one fixed 0..1 colour axis with a colour bar, not min-max per map
        drop = np.asarray(e["base_true_prob"]) - np.asarray(e["true_prob"])
        np.testing.assert_allclose(fig["data"][0]["z"], drop, atol=1e-4)
        rel = 1 - np.asarray(e["activation"]) / e["base_activation"]
        np.testing.assert_allclose(fig["data"][2]["z"], rel, atol=1e-4)
        assert fig["data"][0]["customdata"] == e["true_prob"]
        assert {t["coloraxis"] for t in fig["data"]} == {"coloraxis"}
        cax = fig["layout"]["coloraxis"]
        assert (cax["cmin"], cax["cmax"]) == (0, 1) and cax["colorbar"]["title"]["text"] == "drop"
        sources = {im["source"] for im in fig["layout"]["images"]}
        assert sources == {f"../img/shapes/{e['index']}.png"}
        assert (site / "tiny-alex" / sources.pop()).is_file()  # page-relative, resolves in the site
        titles = [a["text"] for a in fig["layout"]["annotations"]]
        assert titles[2] == (
            f"conv2 unit {e['unit']}: max drop {max(0, rel.max()) * 100:.0f}% of {e['base_activation']:.3g}"
        )
        assert titles[0].endswith(f": max drop {max(0, drop.max()):.2f} from {e['base_true_prob']:.2f}")
    # The fifth image is of the XSS class: its panel title reaches Plotly escaped.
    titles = [a["text"] for a in figs[f"fig-occlusion-{OCCLUSION_IMAGES - 1}"]["layout"]["annotations"]]
    assert titles[0].startswith(f"p({plotly_text(XSS_CLASS)}): max drop ")
    assert not any("<img" in t for t in titles)
    # Each caption links the followed unit's page.
    text = (site / "tiny-alex/index.html").read_text(encoding="utf-8")
    links = re.findall(r'<a href="(conv2/unit-\d{4}\.html)">unit \d+</a> · largest drop', text)
    assert links == [f"conv2/unit-{e['unit']:04d}.html" for e in doc["images"]]
    assert all((site / "tiny-alex" / link).is_file() for link in links)


def test_embedding_has_one_point_per_probe_image_and_escaped_legend(site: Path, store: Path) -> None:
    doc = _doc(store, "embedding")
    fig = _figures(site / "tiny-alex/index.html")["fig-embedding"]
    assert len(fig["data"]) == N_CLASSES  # one trace per class (legend toggles a class)
    assert sum(len(t["x"]) for t in fig["data"]) == len(doc["x"]) == N_PROBE
    names = [t["name"] for t in fig["data"]]
    assert plotly_text(XSS_CLASS) in names and not any("<" in n for n in names)
    wrong = sum(p != lab for p, lab in zip(doc["predicted"], doc["labels"], strict=True))
    assert sum(s.endswith("-open") for t in fig["data"] for s in t["marker"]["symbol"]) == wrong
    # Issue 14: "t-SNE" written out, axes fitted to the points, a shape per class beside its colour
    layout = fig["layout"]
    assert layout["xaxis"]["title"]["text"] == "t-SNE dimension 1"
    assert layout["yaxis"]["title"]["text"] == "t-SNE dimension 2"
    assert "scaleanchor" not in layout["yaxis"] and "range" not in layout["xaxis"]
    shapes = [t["marker"]["symbol"][0] for t in fig["data"]]
    assert len(set(shapes)) == N_CLASSES and all(a != b for a, b in zip(shapes, shapes[1:], strict=False))
    colours = [t["marker"]["color"] for t in fig["data"]]
    assert len(set(colours)) == N_CLASSES
    text = (site / "tiny-alex/index.html").read_text(encoding="utf-8")
    assert "t-SNE of the" in text and "tsne" not in text.lower().replace("t-sne", "")


def _lab(colour: str) -> np.ndarray:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = m @ rgb / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_class_palette_separates_neighbouring_classes() -> None:
    """Issue 14: 16 classes shared three greens and three purples. CIELAB ΔE (CIE76) of the first 20."""
    lab = [_lab(charts.class_color(i)) for i in range(20)]
    neighbours = [float(np.linalg.norm(lab[i] - lab[i + 1])) for i in range(19)]
    assert min(neighbours) > 45, neighbours
    assert min(float(np.linalg.norm(a - b)) for i, a in enumerate(lab) for b in lab[i + 1 :]) > 19
    pairs = {(charts.class_color(i), charts.class_symbol(i)) for i in range(140)}
    assert len(pairs) == 140


def test_invariance_and_stroke_figures(site: Path, store: Path) -> None:
    inv = _doc(store, "invariance")
    figs = _figures(site / "tiny-alex/index.html")
    for kind, k in inv["kinds"].items():
        fig = figs[f"fig-invariance-{kind}"]
        # per layer: one thin line per image + the mean; then one line per image (probability)
        assert len(fig["data"]) == len(inv["layers"]) * (INVARIANCE_IMAGES + 1) + INVARIANCE_IMAGES
        assert all(t["x"] == k["amounts"] for t in fig["data"])
    stroke = _doc(store, "stroke")
    corr = figs["fig-stroke-corr"]
    assert corr["data"][0]["x"] == ["conv1", "conv2", "fc6", "prob"]
    assert corr["data"][0]["y"] == [stroke["rho_density"][lay] for lay in ("conv1", "conv2", "fc6", "prob")]
    overall = figs["fig-stroke-overall"]["data"][0]
    assert len(overall["x"]) == N_CLASSES and plotly_text(XSS_CLASS) in overall["text"]
    # Layer pages show their own scatter with the layer's rho.
    layer = _figures(site / "tiny-alex/conv1/index.html")["fig-stroke"]
    rho = stroke["rho_density"]["conv1"]
    assert layer["layout"]["annotations"][0]["text"] == f"Spearman ρ = {rho:+.2f}"


# --- layer and unit pages -----------------------------------------------------------------------------


def test_layer_page_feature_visualization_grid_links_units(site: Path, store: Path) -> None:
    units = _doc(store, "featvis")["layers"][FEATVIS_LAYER]["units"]
    folder = site / "tiny-alex" / FEATVIS_LAYER
    text = (folder / "index.html").read_text(encoding="utf-8")
    grid = re.search(r'<ol class="fv-grid">(.*?)</ol>', text, re.S)
    assert grid, "no fv-grid"
    hrefs = re.findall(r'<a href="([^"]+)"', grid.group(1))
    srcs = re.findall(r'<img src="([^"]+)"', grid.group(1))
    assert hrefs == [f"unit-{u:04d}.html" for u in units]
    assert srcs == [f"unit-{u:04d}-fv.webp" for u in units]
    assert all((folder / h).is_file() and (folder / s).is_file() for h, s in zip(hrefs, srcs, strict=True))
    assert 'id="featvis"' not in (site / "tiny-alex/conv1/index.html").read_text(encoding="utf-8")


def test_unit_page_with_feature_visualization_and_erf(site: Path, store: Path) -> None:
    erf = _doc(store, "erf")["layers"][ERF_LAYER]
    assert sorted(erf, key=int) == [str(u) for u in range(ERF_UNITS)]
    folder = site / "tiny-alex" / ERF_LAYER
    page = folder / "unit-0000.html"
    parsed = tags(page)
    fv = [a for t, a in parsed.tags if t == "img" and "fv" in a.get("class", "").split()]
    assert [a["src"] for a in fv] == ["unit-0000-fv.webp"]
    assert (folder / "unit-0000-fv.webp").read_bytes() == (
        store / CK / "featvis/conv2/unit-0000.webp"
    ).read_bytes()
    assert (folder / "unit-0000-erf.png").read_bytes() == (store / CK / erf["0"]["png"]).read_bytes()
    text = page.read_text(encoding="utf-8")
    block = re.search(
        r'<div class="erf"><img src="unit-0000-erf.png"[^>]*><div class="rf" style="([^"]+)">', text
    )
    assert block, "no erf card with its RF box"
    s, a = erf["0"]["map_size"], erf["0"]["analytic_size"]
    off, size = f"{100 * (s - a) / 2 / s:.2f}%", f"{100 * a / s:.2f}%"
    assert block.group(1) == f"top:{off};left:{off};width:{size};height:{size}"
    assert f"occluder {ERF_OCCLUDER} px" in text


def test_unit_pages_without_erf_or_featvis(site: Path) -> None:
    third = (site / "tiny-alex/conv2/unit-0003.html").read_text(encoding="utf-8")
    assert 'class="erf"' not in third and "Empirical receptive field" not in third
    assert 'src="unit-0003-fv.webp"' in third
    assert not (site / "tiny-alex/conv2/unit-0003-erf.png").exists()
    for other in ("tiny-alex/conv1/unit-0000.html", "tiny-alex/@epoch-1/conv2/unit-0000.html"):
        text = (site / other).read_text(encoding="utf-8")
        assert "unit-extra" not in text and "-fv.webp" not in text and 'class="erf"' not in text, other


def test_site_with_techniques_checks_clean(site: Path) -> None:
    problems = check_site(site)
    assert not problems, "\n".join(map(str, problems))
    assert len(list((site / "tiny-alex/gradcam").iterdir())) == 2 * N_CLASSES


# --- errors -------------------------------------------------------------------------------------------


def _edit(name: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(ck: Path) -> None:
        doc = codecs.read_json(ck / f"{name}.json")
        change(doc)
        codecs.write_json(ck / f"{name}.json", doc)

    return apply


def _set(d: dict[str, Any], **kw: Any) -> None:
    d.update(kw)


BROKEN: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "format": (_edit("gradcam", lambda d: _set(d, format=2)), ("gradcam.json", "format 2", "reads format 1")),
    "not-json": (lambda ck: (ck / "stroke.json").write_text("{"), ("stroke.json", "unreadable")),
    "not-an-object": (
        lambda ck: (ck / "embedding.json").write_text("[1]"),
        ("embedding.json", "format None"),
    ),
    "missing-images": (
        _edit("occlusion", lambda d: d.pop("images")),
        ("occlusion.json", "malformed", "images"),
    ),
    "missing-x": (_edit("embedding", lambda d: d.pop("x")), ("embedding.json", "malformed")),
    "missing-layers": (_edit("invariance", lambda d: d.pop("layers")), ("invariance.json", "malformed")),
    "class-out-of-range": (
        _edit("occlusion", lambda d: d["images"][0].update(label=99)),
        ("occlusion.json", "malformed"),
    ),
    "png-dotdot": (
        _edit("gradcam", lambda d: d["images"][0].update(true_png="../epoch-1/filters.png")),
        ("'../epoch-1/filters.png'", "leaves the checkpoint folder"),
    ),
    "png-absolute": (
        _edit("erf", lambda d: d["layers"]["conv2"]["0"].update(png="/etc/passwd")),
        ("'/etc/passwd'", "leaves the checkpoint folder"),
    ),
    "png-missing": (
        lambda ck: (ck / "gradcam/0-pred.png").unlink(),
        ("gradcam/0-pred.png", "missing", "rerun `sitegen build`"),
    ),
    "webp-missing": (
        lambda ck: (ck / "featvis/conv2/unit-0003.webp").unlink(),
        ("featvis/conv2/unit-0003.webp", "missing"),
    ),
    "listed-file-missing": (
        lambda ck: (ck / "stroke.json").unlink(),
        ("stroke.json", "missing", "rerun `sitegen build`"),
    ),
}


def _broken_store(store: Path, tmp_path: Path, breaks: Callable[[Path], None]) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(store, dst)
    breaks(dst / CK)
    return dst


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_technique_file_is_one_line(store: Path, tmp_path: Path, case: str) -> None:
    breaks, needles = BROKEN[case]
    broken = _broken_store(store, tmp_path, breaks)
    with pytest.raises(RenderError) as exc:
        render_site(broken, tmp_path / "site")
    msg = str(exc.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for n in needles:
        assert n in msg, msg
    assert not (tmp_path / "site").exists()


def test_manifest_without_techniques_ignores_stray_files(store: Path, tmp_path: Path) -> None:
    """The manifest decides: technique files it does not list (a stale build) are not shown."""
    st = Store(_broken_store(store, tmp_path, lambda ck: None))
    m = st.read_manifest("tiny-alex", "epoch-2")
    st.write_manifest(m.model_copy(update={"techniques": ["embedding"]}))
    codecs.write_json(st.root / CK / "gradcam.json", {"format": 99})  # unlisted: never read
    site = tmp_path / "site"
    render_site(st.root, site)
    text = (site / "tiny-alex/index.html").read_text(encoding="utf-8")
    assert 'id="embedding"' in text and 'id="gradcam"' not in text and 'id="occlusion"' not in text
    assert not (site / "tiny-alex/gradcam").exists() and not list(site.rglob("*-fv.webp"))
    assert not check_site(site)


# Missing or mistyped keys anywhere in a technique file: a RenderError naming the file, never a bare
# KeyError / IndexError / AttributeError.
UNGUARDED: dict[str, Callable[[Path], None]] = {
    "gradcam-layer": _edit("gradcam", lambda d: d.pop("layer")),
    "occlusion-size": _edit("occlusion", lambda d: d.pop("size")),
    "embedding-dim": _edit("embedding", lambda d: d.pop("dim")),
    "stroke-kind": _edit("stroke", lambda d: d.pop("kind")),
    "featvis-layers": _edit("featvis", lambda d: d.pop("layers")),
    "featvis-steps": _edit("featvis", lambda d: d.pop("steps")),
    "featvis-objective-short": _edit("featvis", lambda d: d["layers"]["conv2"]["objective"].pop()),
    "erf-layers": _edit("erf", lambda d: d.pop("layers")),
    "erf-map-size": _edit("erf", lambda d: d["layers"]["conv2"]["0"].pop("map_size")),
    "erf-layers-list": _edit("erf", lambda d: _set(d, layers=[])),
}


@pytest.mark.parametrize("case", list(UNGUARDED))
def test_malformed_key_is_a_render_error(store: Path, tmp_path: Path, case: str) -> None:
    broken = _broken_store(store, tmp_path, UNGUARDED[case])
    name = case.split("-")[0]
    with pytest.raises(RenderError) as exc:
        render_site(broken, tmp_path / "site")
    assert f"{name}.json" in str(exc.value) and "malformed" in str(exc.value)
