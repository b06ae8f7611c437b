"""Exemplar evidence (issue 15, item 7): thresholds, maps, patch geometry, outlines, the unit page."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from sitegen.analyses import masks
from sitegen.analyses._crop import rf_patch
from sitegen.analyses.registry import REGISTRY, Context, names
from sitegen.mine import mine
from sitegen.models import layer_table
from sitegen.models.types import LoadedModel
from sitegen.receptive_field import RF, unit_box
from sitegen.render._outline import centres, contour, svg_path
from sitegen.render.sections import Files, UnitPage
from sitegen.render.sections import masks as section
from sitegen.spec import AnalysesSpec, MasksSpec
from sitegen.store.formats import MasksDoc, MasksLayer

SIZE = 16


# --- the threshold ---------------------------------------------------------------------------------


def test_quantile_of_a_hand_made_map() -> None:
    """0..999 in any order: numpy's linear 99.5th percentile is 994.005; only the top values are needed."""
    values = np.random.default_rng(0).permutation(1000).astype(np.float64)
    n, q = 1000, 0.995
    m = masks.top_count(n, q)
    assert m == 7  # floor(0.995 * 999) = 994: values 993..999 suffice (one spare)
    top = np.sort(values)[::-1][:m][None]
    assert masks.quantile_from_top(top, n, q)[0] == pytest.approx(994.005, abs=1e-9)
    assert np.quantile(values, q) == pytest.approx(994.005, abs=1e-9)


@pytest.mark.parametrize("n", [1, 2, 7, 200, 3025 * 3])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.995])
def test_quantile_from_top_equals_numpy(n: int, q: float) -> None:
    x = np.random.default_rng(n).normal(size=(3, n))
    top = -np.sort(-x, axis=1)[:, : masks.top_count(n, q)]
    np.testing.assert_allclose(masks.quantile_from_top(top, n, q), np.quantile(x, q, axis=1), rtol=1e-12)


@pytest.mark.parametrize("units", [[2, 0], [0, 1, 2]])
@pytest.mark.parametrize(("high", "q"), [(5000, 0.995), (3, 0.995), (5000, 0.9), (3, 0.5)])
def test_streamed_top_values_give_the_quantile_of_the_whole_sample(
    units: list[int], high: int, q: float
) -> None:
    """Batches of integer-valued maps (exact in float32; high=3: mostly ties) folded into the running
    top-m, channels_last as in the pass, the later batches through the m-th-largest cut."""
    rng = np.random.default_rng(high)
    maps = rng.integers(0, high, (10, 3, 6, 5)).astype(np.float32)  # 10 images, 3 units, 6x5
    tq = masks._TopQuantile(units, 3, 10 * 6 * 5, q, torch.device("cpu"))
    for chunk in np.array_split(maps, 4):
        tq.update(torch.from_numpy(chunk).contiguous(memory_format=torch.channels_last))
    flat = maps[:, units].transpose(1, 0, 2, 3).reshape(len(units), -1).astype(np.float64)
    np.testing.assert_allclose(tq.thresholds(), np.quantile(flat, q, axis=1), rtol=1e-12)


def test_sample_is_evenly_spaced() -> None:
    assert masks.sample_indices(10, 4).tolist() == [1, 3, 6, 8]
    assert masks.sample_indices(3, 256).tolist() == [0, 1, 2]


# --- maps on a tiny network --------------------------------------------------------------------------


class _Probe(Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i % 3


def _tiny() -> tuple[LoadedModel, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),  # conv1: 16x16, RF 3
        nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.ReLU(inplace=True),  # conv2: 8x8, RF 8, stride 2, offset 0.5
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    ).eval()
    images = torch.rand(12, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    layers = layer_table(net, SIZE)
    return LoadedModel(net, "tiny", 3, SIZE, (0.5,) * 3, (0.25,) * 3, layers, 0), images


def _context(lm: LoadedModel, images: torch.Tensor, shown: dict[str, list[int]]) -> Context:
    return Context(
        loaded=lm,
        network="tiny",
        image=lambda i: images[i],
        picture=lambda i: (images[i].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
        class_names=("a", "b", "c"),
        labels=np.arange(len(images)) % 3,
        shown=shown,
        weighted={},
        device=torch.device("cpu"),
        seed=0,
        problem=lambda loc, msg: f"spec: {'.'.join(map(str, loc))}: {msg}",
    )


def _direct_maps(lm: LoadedModel, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Every layer's maps on every image by a plain forward, one image at a time (the reference)."""
    out: dict[str, list[np.ndarray]] = {"conv1": [], "conv2": []}
    mods = dict(lm.module.named_modules())
    got: dict[str, torch.Tensor] = {}

    def keep(name: str):  # type: ignore[no-untyped-def]
        return lambda _m, _a, o: got.__setitem__(name, o.clone())

    with torch.inference_mode():
        for x in images:
            hooks = [mods[i.module].register_forward_hook(keep(i.name)) for i in lm.layers if i.name in out]
            lm.module(lm.normalize(x[None]))
            for h in hooks:
                h.remove()
            for name in out:
                out[name].append(got[name][0].double().numpy())
    return {k: np.stack(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def tiny_run() -> tuple[LoadedModel, torch.Tensor, masks.Result, object]:
    lm, images = _tiny()
    mined = mine(lm, _Probe(images), k=4, batch_size=5)
    ctx = _context(lm, images, {"conv1": [0, 2, 3], "conv2": [1, 4], "fc3": [0]})
    result = masks.run(ctx, mined, MasksSpec(sample=5, batch_size=3))
    assert result is not None
    return lm, images, result, mined


def test_maps_are_the_layer_output_on_each_top_image(tiny_run) -> None:  # type: ignore[no-untyped-def]
    lm, images, result, mined = tiny_run
    ref = _direct_maps(lm, images)
    assert [lay.info.name for lay in result.layers] == ["conv1", "conv2"]  # fc3 is not spatial
    for lay in result.layers:
        topk = mined.layers[lay.info.name]
        assert lay.maps.dtype == np.float16 and lay.maps.shape == (len(lay.units), 4, *lay.info.shape[1:])
        for s, u in enumerate(lay.units):
            np.testing.assert_array_equal(lay.images[s], topk.images[u])
            for r, i in enumerate(lay.images[s]):
                np.testing.assert_allclose(lay.maps[s, r], ref[lay.info.name][i, u], rtol=2e-3, atol=1e-6)


def test_threshold_is_the_quantile_over_the_sample_positions(tiny_run) -> None:  # type: ignore[no-untyped-def]
    lm, images, result, _ = tiny_run
    ref = _direct_maps(lm, images)
    sample = masks.sample_indices(len(images), 5)
    assert result.sample == 5 and result.probe == 12 and sample.tolist() == [1, 3, 6, 8, 10]
    for lay in result.layers:
        vals = ref[lay.info.name][sample][:, lay.units]  # [5, S, rows, cols]
        want = np.quantile(vals.transpose(1, 0, 2, 3).reshape(len(lay.units), -1), 0.995, axis=1)
        assert lay.threshold.dtype == np.float16
        np.testing.assert_allclose(lay.threshold.astype(np.float64), want, rtol=2e-3, atol=1e-6)


def test_rank_one_mask_holds_the_argmax(tiny_run) -> None:  # type: ignore[no-untyped-def]
    """The rank-1 map peaks at the mined position, above the threshold, and the drawn outline encloses
    that position's receptive-field centre."""
    lm, _, result, mined = tiny_run
    checked = 0
    for lay in result.layers:
        topk = mined.layers[lay.info.name]
        ys = centres(lay.maps.shape[2], lay.info.rf_stride, lay.info.rf_offset)
        xs = centres(lay.maps.shape[3], lay.info.rf_stride, lay.info.rf_offset)
        for s, u in enumerate(lay.units):
            row, col, value = int(topk.rows[u, 0]), int(topk.cols[u, 0]), float(topk.values[u, 0])
            m, t = lay.maps[s, 0].astype(np.float32), float(lay.threshold[s])
            assert m[row, col] == pytest.approx(value, rel=2e-3, abs=1e-6)
            assert m[row, col] == m.max()
            if value <= 0:
                continue  # a dead unit has no region
            assert m[row, col] > t
            loops = contour(m, t, ys, xs, (SIZE, SIZE))
            assert any(_inside((ys[row], xs[col]), loop) for loop in loops)
            checked += 1
    assert checked >= 3


def _inside(point: tuple[float, float], loop: np.ndarray) -> bool:
    """Even-odd point-in-polygon on (row, col) vertices."""
    y, x = point
    hit = False
    for (y1, x1), (y2, x2) in zip(loop, np.roll(loop, -1, axis=0), strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


def test_patch_boxes_put_the_position_at_the_patch_centre(tiny_run) -> None:  # type: ignore[no-untyped-def]
    _, _, result, mined = tiny_run
    for lay in result.layers:
        topk = mined.layers[lay.info.name]
        for s, u in enumerate(lay.units):
            for r in range(4):
                box = lay.boxes[s, r]
                assert box[2] - box[0] == box[3] - box[1] == lay.info.rf_size
                y = centres(topk.rows[u, r] + 1, lay.info.rf_stride, lay.info.rf_offset)[-1]
                vx, vy, vw, vh = map(float, section.patch_view_box(box).split())
                assert ((y - vy) / vh) == pytest.approx(0.5)


# --- the patch geometry by hand ------------------------------------------------------------------------


def test_map_positions_land_on_the_patch_where_the_crop_put_them() -> None:
    """AlexNet conv1 (RF 11, stride 4, offset 3): position (0, 1) sees the box (-2, 2, 9, 13). Its centre
    (continuous (3.5, 7.5)) is the patch's centre, and a pixel the crop copies to patch pixel (i, j) is
    drawn there through the viewBox."""
    rf = RF(11, 4, 3.0)
    box = unit_box(rf, 0, 1)
    assert box == (-2, 2, 9, 13)
    vb = section.patch_view_box(box)
    assert vb == "2 -2 11 11"
    vx, vy, vw, vh = map(float, vb.split())
    cy, cx = centres(1, 4, 3.0)[0], centres(2, 4, 3.0)[1]
    assert (cy, cx) == (3.5, 7.5)
    assert ((cy - vy) / vh, (cx - vx) / vw) == (0.5, 0.5)
    image = np.zeros((224, 224, 3), np.uint8)
    image[5, 10] = 255  # one marked pixel: continuous centre (5.5, 10.5)
    patch = rf_patch(image, box, fill=0)
    (i,), (j,) = np.nonzero(patch[..., 0])
    assert (i, j) == (7, 8)
    assert ((5.5 - vy) / vh * 11, (10.5 - vx) / vw * 11) == pytest.approx((i + 0.5, j + 0.5), abs=1e-12)


# --- the outline -------------------------------------------------------------------------------------


def test_outline_of_one_position_is_the_diamond_between_its_neighbours() -> None:
    m = np.zeros((5, 5))
    m[2, 2] = 1
    ys = centres(5, 4, 1.5)  # 2, 6, 10, 14, 18
    loops = contour(m, 0.5, ys, ys, (20, 20))
    assert len(loops) == 1
    assert sorted(map(tuple, loops[0].tolist())) == [(8, 10), (10, 8), (10, 12), (12, 10)]
    assert svg_path(loops) == "M8 10 10 8 12 10 10 12Z"


def test_outline_of_a_full_map_runs_along_the_image_edge() -> None:
    loops = contour(np.ones((3, 3)), 0.5, centres(3, 4, 1.5), centres(3, 4, 1.5), (12, 12))
    assert len(loops) == 1
    pts = set(map(tuple, loops[0].tolist()))
    assert {(0, 0), (0, 12), (12, 12), (12, 0)} <= pts
    assert all(r in (0, 12) or c in (0, 12) for r, c in pts)


def test_outline_of_a_hand_made_bit_mask() -> None:
    """Two separate regions; the one at the border closes along the edge; nothing below the level."""
    m = np.zeros((4, 6))
    m[0, 0] = 1  # corner: closed along the top and left edges
    m[2:4, 3:5] = 1  # a 2x2 block at the bottom edge
    ys, xs = centres(4, 2, 0.5), centres(6, 2, 0.5)  # rows at 1, 3, 5, 7; cols at 1, 3, ..., 11
    loops = contour(m, 0.5, ys, xs, (8, 12))
    assert len(loops) == 2
    corner = next(lp for lp in loops if lp[:, 1].max() < 4)
    block = next(lp for lp in loops if lp[:, 1].min() > 4)
    assert set(map(tuple, corner.tolist())) >= {(0.0, 0.0), (2.0, 0.0), (0.0, 2.0), (1.0, 2.0), (2.0, 1.0)}
    rows, cols = block[:, 0], block[:, 1]
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (4.0, 8.0, 6.0, 10.0)
    assert contour(m, 1.5, ys, xs, (8, 12)) == [] and svg_path([]) == ""


def test_saddle_follows_the_cell_mean() -> None:
    m = np.array([[1.0, 0.0], [0.0, 1.0]])
    ys = centres(2, 4, 1.5)
    apart = contour(m, 0.6, ys, ys, (8, 8))  # centre 0.5 < 0.6: two regions
    joined = contour(m, 0.4, ys, ys, (8, 8))  # centre 0.5 > 0.4: one region
    assert (len(apart), len(joined)) == (2, 1)


# --- the stored document and the section ------------------------------------------------------------------


def test_save_and_unit_view(tiny_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lm, images, result, _ = tiny_run
    ctx = _context(lm, images, {})
    doc = masks.save(ctx, result, tmp_path)
    (tmp_path / "masks.json").write_text(json.dumps(doc.model_dump(mode="json")))
    again = MasksDoc.model_validate_json((tmp_path / "masks.json").read_text())
    assert again.layers["conv2"] == MasksLayer(
        units=[1, 4], grid=[8, 8], rf_size=8, rf_stride=2, rf_offset=0.5
    )
    files = Files(tmp_path, "", "masks", lambda site, src: None)
    view = section.unit(again, UnitPage("conv2", 4, "net/conv2/"), files)
    assert view is not None and view.view_box == "0 0 16 16" and view.quantile == "99.5th"
    assert sorted(view.outlines) == [1, 2, 3, 4] and view.grid == "8×8" and view.sample == 5
    lay = result.layers[1]
    o = view.outlines[1]
    assert o.image == lay.images[1, 0] and o.patch == section.patch_view_box(lay.boxes[1, 0])
    assert o.d.startswith("M") and o.d.endswith("Z")
    assert section.unit(again, UnitPage("conv2", 0, "net/conv2/"), files) is None  # not a shown unit
    assert section.unit(again, UnitPage("fc3", 0, "net/fc3/"), files) is None


def test_registered_on_by_default() -> None:
    kind = REGISTRY["masks"]
    assert kind.analysis() is masks and kind.params is MasksSpec is masks.Params and kind.doc is MasksDoc
    assert kind.enabled(AnalysesSpec()) and "masks" in names()
    assert AnalysesSpec().masks.quantile == 0.995


def test_unknown_layer_is_a_spec_error() -> None:
    from sitegen.errors import SpecError

    lm, _ = _tiny()
    with pytest.raises(SpecError, match="analyses.masks.layers: none of"):
        masks.check(
            MasksSpec(layers=["conv9"]), lm.layers, lambda loc, msg: f"spec: {'.'.join(loc)}: {msg}", "t"
        )


def test_network_without_conv_layers_has_nothing_to_show() -> None:
    lm, images = _tiny()
    ctx = _context(lm, images, {"fc3": [0]})
    assert masks.run(ctx, SimpleNamespace(layers={}), MasksSpec()) is None  # type: ignore[arg-type]


# --- the unit page in a browser ---------------------------------------------------------------------------


def _add_masks(root: Path, net: str = "tiny-alex", ckpt: str = "epoch-2") -> None:
    """Give the fixture's conv layers synthetic maps: a Gaussian blob at each rank's mined position,
    thresholds 0.5, and list the document in the manifest (numpy only, like the fixture)."""
    from sitegen.store import Store, codecs

    store = Store(root)
    m = store.read_manifest(net, ckpt)
    rec = store.read_network(net)
    mined = store.read_arrays(net, ckpt, "mined")
    arrays, layers = {}, {}
    for lay in rec.layers:
        if lay.kind != "conv":
            continue
        units = list(m.shown_units[lay.name])
        _, rows, cols = lay.shape
        images = mined[f"{lay.name}/images"][units]
        rr, cc = np.mgrid[:rows, :cols]
        maps = np.zeros((len(units), images.shape[1], rows, cols), np.float16)
        boxes = np.full((*images.shape, 4), -1, np.int32)
        rf = RF(lay.rf_size, lay.rf_stride, lay.rf_offset)
        for s, u in enumerate(units):
            for r in range(images.shape[1]):
                row, col = int(mined[f"{lay.name}/rows"][u, r]), int(mined[f"{lay.name}/cols"][u, r])
                maps[s, r] = np.exp(-((rr - row) ** 2 + (cc - col) ** 2) / (2 * (0.8 + 0.2 * r) ** 2))
                boxes[s, r] = unit_box(rf, row, col)
        arrays |= {
            f"{lay.name}/maps": maps,
            f"{lay.name}/images": images.astype(np.int64),
            f"{lay.name}/threshold": np.full(len(units), 0.5, np.float16),
            f"{lay.name}/boxes": boxes,
        }
        layers[lay.name] = MasksLayer(
            units=units,
            grid=[rows, cols],
            rf_size=lay.rf_size,
            rf_stride=lay.rf_stride,
            rf_offset=lay.rf_offset,
        )
    ck = store.checkpoint_dir(net, ckpt)
    codecs.write_npz(ck / "masks.npz", arrays)
    n = len(np.load(store.dataset_dir(rec.dataset) / "labels.npy"))
    doc = MasksDoc(
        quantile=0.995,
        sample=min(256, n),
        probe=n,
        input_size=rec.input_size,
        file="masks.npz",
        layers=layers,
    )
    store.write_analysis(net, ckpt, doc)
    store.write_manifest(m.model_copy(update={"techniques": [*m.techniques, "masks"]}))


@pytest.fixture(scope="module")
def masks_site(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(base URL, site folder) of the fixture store with masks, served over HTTP (localStorage)."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from fixture_store import make_fixture_store

    from sitegen.render import render_site

    tmp = tmp_path_factory.mktemp("masks-site")
    store = make_fixture_store(tmp / "store", networks=("tiny-alex",))
    _add_masks(store)
    site = tmp / "site"
    render_site(store, site)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", site
    finally:
        server.shutdown()


def test_unit_page_lists_the_outlines(masks_site) -> None:  # type: ignore[no-untyped-def]
    _, site = masks_site
    html = (site / "tiny-alex" / "conv2" / "unit-0003.html").read_text()
    assert html.count('<svg class="mask"') == 2 * 9  # each top image and its patch
    # issue 13 (site size): each path is written once, on the image; its patch shows it through <use>
    assert html.count("<path ") == 9 and html.count('<use href="#mo') == 9
    for r in range(1, 10):
        assert f'<path id="mo{r}" vector-effect="non-scaling-stroke" d="M' in html
        assert f'<use href="#mo{r}"/>' in html
    assert "data-outline-toggle" in html and 'id="masks"' in html and "99.5th percentile" in html
    assert 'class="mask"' not in (site / "tiny-alex" / "fc6" / "unit-0001.html").read_text()


@pytest.mark.browser
def test_outline_toggle_shows_hides_and_sticks(masks_site, chromium) -> None:  # type: ignore[no-untyped-def]
    base, _ = masks_site
    artifacts = Path(__file__).resolve().parent.parent / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    url = base + "tiny-alex/conv2/unit-0003.html"
    visible = (
        "Array.from(document.querySelectorAll('svg.mask'))"
        ".filter(s => s.getBoundingClientRect().width > 0).length"
    )
    # one chromium per session (tests/test_browser.py's fixture): playwright's sync API allows one
    page = chromium.new_page(viewport={"width": 1920, "height": 1080})
    try:
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_load_state("load")
        assert page.evaluate(visible) == 18  # on by default
        # the outline's svg covers its image / patch exactly (the viewBox does the mapping)
        fit = page.evaluate(
            """Array.from(document.querySelectorAll('svg.mask')).map(s => {
                 const a = s.getBoundingClientRect(), b = s.parentElement.getBoundingClientRect();
                 return Math.max(Math.abs(a.left - b.left), Math.abs(a.width - b.width)); })"""
        )
        assert max(fit) <= 2.5, fit
        # each patch draws its image's path through <use> (issue 13): a non-empty outline there too
        used = page.evaluate(
            "Array.from(document.querySelectorAll('svg.mask use')).map(u => u.getBBox().width)"
        )
        assert len(used) == 9 and min(used) > 0, used
        page.screenshot(path=str(artifacts / "masks-unit-1920.png"), full_page=False)
        button = page.locator("[data-outline-toggle]")
        page.keyboard.press("a")
        assert page.evaluate(visible) == 0 and button.get_attribute("aria-pressed") == "false"
        page.reload()
        page.wait_for_load_state("load")
        assert page.evaluate(visible) == 0  # sticky
        button.click()
        assert page.evaluate(visible) == 18 and button.get_attribute("aria-pressed") == "true"
        page.set_viewport_size({"width": 390, "height": 844})
        page.reload()
        page.wait_for_load_state("load")
        assert page.evaluate(visible) == 18
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, overflow
        page.screenshot(path=str(artifacts / "masks-unit-390.png"), full_page=False)
        assert errors == []
    finally:
        page.close()
