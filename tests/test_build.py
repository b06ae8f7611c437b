"""End to end: a tiny spec through `sitegen build` — store, site, cache hits, resume after a crash."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sitegen.build import build
from sitegen.cli import app
from sitegen.spec import load_spec
from sitegen.store import Store

SPEC = """\
title: tiny <atlas>
seed: 3
datasets:
  d:
    builtin: doodles
    classes: [circle, square, star, spiral]
    images_per_class: 12
    image_size: 32
networks:
  net:
    arch: zoo:alexnet_small
    dataset: d
    units: 4
    train: {epochs: 2, batch_size: 8}
analyses:
  top_k: 4
  batch_size: 7
  reconstructions: {methods: [deconvnet]}
  activation_maps: {images: 2, channels: 2}
  featvis: {enabled: true, steps: 4, layers: last, grayscale: true}
  smoothgrad: {enabled: true, images: 2, samples: 4}
  empirical_rf: {enabled: true, units: 1, layers: [conv5, conv2_2]}  # conv2_2: a vgg name, skipped here
  masks: {sample: 16}
  similar: {k: 3}
  effect: {ablation: {enabled: true, layers: [conv5, fc6], images: 8, batch_size: 16}}
diffs:
  - {a: net@epoch-1, b: net@epoch-2}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    (root / "experiments.yaml").write_text(textwrap.dedent(SPEC))
    result = CliRunner().invoke(app, ["build", str(root / "experiments.yaml")])
    assert result.exit_code == 0, result.output
    return root


def test_store_holds_every_layer(built: Path) -> None:
    store = Store(built / "output" / "store")
    build_rec = store.read_build()
    assert build_rec.networks == ["net"] and build_rec.title == "tiny <atlas>"
    net = store.read_network("net")
    assert [c.name for c in net.checkpoints] == ["epoch-1", "epoch-2"]
    assert [c.atlas for c in net.checkpoints] == [False, True]
    assert store.cached("net", "epoch-1", store.read_manifest("net", "epoch-1").key)  # mined for the diff
    assert len(net.training) == 2
    m = store.read_manifest("net", "epoch-2")
    assert m.layers == [layer.name for layer in net.layers]
    mined = store.read_arrays("net", "epoch-2", "mined")
    classes = store.read_arrays("net", "epoch-2", "classes")
    n_probe = store.read_dataset("d").n_probe
    for layer in net.layers:
        values = mined[f"{layer.name}/values"]
        assert values.shape == (layer.units, 4)
        assert np.all(np.diff(values, axis=1) <= 0), "top-k must be sorted descending"
        assert mined[f"{layer.name}/boxes"].shape == (layer.units, 4, 4)
        assert classes[f"{layer.name}/per_rank"].shape == (4, 4)
        assert len(m.shown_units[layer.name]) == min(4, layer.units)
        for u in m.shown_units[layer.name]:
            assert store.sprite_path("net", "epoch-2", layer.name, u).is_file()
    assert mined["predictions/top5"].shape[0] == n_probe
    assert classes["confusion"].sum() == n_probe


def test_site_is_written(built: Path) -> None:
    site = built / "output" / "site"
    assert (site / "index.html").is_file()
    assert (site / ".nojekyll").is_file()
    assert (built / "output" / "index.html").is_file()
    html = (site / "index.html").read_text()
    assert "tiny &lt;atlas&gt;" in html and "tiny <atlas>" not in html
    # issue 15: a class page per class, listing units of the real build by share and selectivity
    circle = (site / "classes" / "d" / "circle.html").read_text()
    assert circle.count('<li class="cu">') >= 2 and "classes/d/index.html" in html


def test_rebuild_is_cached(built: Path) -> None:
    manifest = built / "output/store/networks/net/epoch-2/manifest.json"
    before = manifest.read_bytes()
    result = CliRunner().invoke(app, ["build", str(built / "experiments.yaml")])
    assert result.exit_code == 0, result.output
    assert "net@epoch-2: cached" in result.output
    assert "0 checkpoint(s) computed, 2 cached" in result.output
    assert manifest.read_bytes() == before


def test_interrupted_build_resumes_to_the_same_result(built: Path, tmp_path: Path) -> None:
    """A crash after the arrays but before the manifest: the rerun recomputes and matches."""
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    spec = load_spec(copy / "experiments.yaml")
    store = Store(spec.output / "store")
    reference = store.read_arrays("net", "epoch-2", "mined")
    (store.checkpoint_dir("net", "epoch-2") / "manifest.json").unlink()
    result = build(spec, render=False)
    assert (result.computed, result.cached) == (1, 1)
    again = store.read_arrays("net", "epoch-2", "mined")
    assert set(again) == set(reference)
    for k in reference:
        np.testing.assert_array_equal(again[k], reference[k], err_msg=k)


def test_killed_build_resumes_at_the_layer_it_was_on(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed inside a checkpoint's reconstructions: the rerun mines nothing, redoes only the
    unfinished layers, and its store equals the uninterrupted build's byte for byte."""
    from sitegen.build import mining, sprites

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    spec = load_spec(copy / "experiments.yaml")
    store = Store(spec.output / "store")
    ck = store.checkpoint_dir("net", "epoch-2")
    reference = {p.relative_to(ck): p.read_bytes() for p in sorted(ck.rglob("*")) if p.is_file()}
    layers = store.read_manifest("net", "epoch-2").layers
    (ck / "manifest.json").unlink()
    shutil.rmtree(ck / "units")

    real = sprites.reconstruct_topk
    calls: list[str] = []

    def crash_on_third(loaded, images, info, *args, **kwargs):
        calls.append(info.name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a user's Ctrl-C or a killed job
        return real(loaded, images, info, *args, **kwargs)

    monkeypatch.setattr(sprites, "reconstruct_topk", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        build(spec, render=False)
    assert not (ck / "manifest.json").is_file()
    assert calls == layers[:3]

    calls.clear()
    def count(*args, **kwargs):
        calls.append(args[2].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(sprites, "reconstruct_topk", count)
    monkeypatch.setattr(mining, "mine", lambda *a, **k: pytest.fail("a resumed build must not mine again"))
    assert build(spec, render=False).computed == 1
    assert calls == layers[2:], "only the unfinished layers are reconstructed"
    assert not (ck / "partial").exists(), "resume state is dropped once the entry is complete"
    after = {p.relative_to(ck): p.read_bytes() for p in sorted(ck.rglob("*")) if p.is_file()}
    assert set(after) == set(reference)
    for name, data in reference.items():
        if name.name != "manifest.json":  # timings and creation time differ
            assert after[name] == data, name


def test_build_check_finds_no_broken_links(built: Path) -> None:
    result = CliRunner().invoke(app, ["build", str(built / "experiments.yaml"), "--check", "-q"])
    assert result.exit_code == 0, result.output


def test_render_alone_redraws_the_site(built: Path) -> None:
    site = built / "output" / "site"
    (site / "index.html").unlink()
    result = CliRunner().invoke(app, ["render", str(built / "experiments.yaml")])
    assert result.exit_code == 0, result.output
    assert (site / "index.html").is_file()


def test_spec_diff_is_built_and_linked(built: Path) -> None:
    store = Store(built / "output" / "store")
    (ref,) = store.read_build().diffs
    assert (ref.a, ref.b) == ("net@epoch-1", "net@epoch-2")
    assert (store.root / "diffs" / ref.name / "diff.json").is_file()
    site = built / "output" / "site"
    assert (site / "diff" / ref.name / "index.html").is_file()
    assert f"diff/{ref.name}/index.html" in (site / "index.html").read_text()
    assert (site / "net" / "evolution" / "index.html").is_file()


def test_diff_command(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    result = CliRunner().invoke(
        app, ["diff", "net@epoch-2", "net@epoch-2", "--spec", str(copy / "experiments.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "diff/" in result.output
    bad = CliRunner().invoke(
        app, ["diff", "net@epoch-9", "net@epoch-2", "--spec", str(copy / "experiments.yaml")]
    )
    assert bad.exit_code == 2
    assert "epoch-9" in bad.output and "Traceback" not in bad.output


def test_cached_rebuild_loads_no_model(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    before = Store(copy / "output" / "store").read_network("net")

    def no_load(*_a, **_k):
        raise AssertionError("a cached entry must not load its model")

    monkeypatch.setattr("sitegen.build.network.load_model", no_load)
    result = build(load_spec(copy / "experiments.yaml"), render=False)
    assert (result.computed, result.cached) == (0, 2)
    assert Store(copy / "output" / "store").read_network("net").layers == before.layers


def test_techniques_are_stored_and_shown(built: Path) -> None:
    from sitegen.analyses.registry import names
    from sitegen.store.formats import SmoothGradDoc

    store = Store(built / "output" / "store")
    m = store.read_manifest("net", "epoch-2")
    assert m.techniques == list(names())
    assert store.read_manifest("net", "epoch-1").techniques == []  # mined for the diff only: no pages
    ck = store.checkpoint_dir("net", "epoch-2")
    n_probe = store.read_dataset("d").n_probe
    labels = np.load(store.dataset_dir("d") / "labels.npy")

    def doc(name: str) -> dict:
        return store.read_json(ck / f"{name}.json")  # type: ignore[return-value]

    gradcam = doc("gradcam")
    assert gradcam["layer"] == "conv5" and len(gradcam["images"]) == 8
    # one image per class in class order, then the second of each class
    assert [int(labels[e["index"]]) for e in gradcam["images"]] == [0, 1, 2, 3, 0, 1, 2, 3]
    for e in gradcam["images"]:
        assert (ck / e["true_png"]).is_file() and (ck / e["pred_png"]).is_file()
    occ = doc("occlusion")
    grid = (len(occ["rows"]), len(occ["cols"]))
    assert grid == (15, 15)  # 32 px: a 4 px square (1/8) at stride 2, as every default size
    assert all(np.shape(e[k]) == grid for e in occ["images"] for k in ("true_prob", "activation"))
    emb = doc("embedding")
    assert len(emb["x"]) == len(emb["labels"]) == n_probe and max(map(abs, emb["x"] + emb["y"])) == 1.0
    inv = doc("invariance")
    assert list(inv["kinds"]) == ["translation", "rotation", "scale"]
    assert np.shape(inv["kinds"]["rotation"]["relative"]) == (2, 4, 24)
    stroke = doc("stroke")
    assert stroke["kind"] == "sketch" and list(stroke["rho_density"]) == m.layers
    fv = doc("featvis")
    assert list(fv["layers"]) == ["conv5"] and fv["layers"]["conv5"]["units"] == m.shown_units["conv5"]
    erf = doc("erf")
    first = m.shown_units["conv5"][0]
    assert list(erf["layers"]) == ["conv5"] and list(erf["layers"]["conv5"]) == [str(first)]

    site = built / "output" / "site" / "net"
    network = (site / "index.html").read_text()
    for section in ("gradcam", "occlusion", "embedding", "invariance", "smoothgrad", "stroke"):
        assert f'id="{section}"' in network, section
    sg = store.read_analysis("net", "epoch-2", SmoothGradDoc)
    assert (sg.samples, [int(labels[e.index]) for e in sg.images]) == (4, [0, 1])
    assert all((site / "smoothgrad" / f"{e.index}-smooth.png").is_file() for e in sg.images)
    unit = (site / "conv5" / f"unit-{first:04d}.html").read_text()
    assert f"unit-{first:04d}-fv.webp" in unit and f"unit-{first:04d}-erf.png" in unit
    assert (site / "conv5" / f"unit-{first:04d}-erf.png").is_file()
    other = m.shown_units["conv5"][1]
    assert "-erf.png" not in (site / "conv5" / f"unit-{other:04d}.html").read_text()
    assert 'class="fv-grid"' in (site / "conv5" / "index.html").read_text()
    msk = doc("masks")  # issue 15 (7): every shown conv unit's maps on its top images
    assert (msk["sample"], msk["probe"]) == (min(16, n_probe), n_probe)  # the whole probe set when smaller
    assert list(msk["layers"]) == [n for n in m.layers if n.startswith("conv")]
    assert msk["layers"]["conv5"]["units"] == m.shown_units["conv5"]
    assert 'class="mask"' in unit and "data-outline-toggle" in unit
    sim = doc("similar")  # issue 15 (6): k most correlated units, same and next layer
    assert sim["k"] == 3 and sim["layers"]["conv5"]["next"] == "fc6"
    assert all(len(e["same"]) <= 3 for e in sim["layers"]["conv5"]["units"].values())
    assert 'id="similar"' in unit


def test_changing_one_analysis_recomputes_only_it(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: each analysis document is keyed by (its checkpoint entry's inputs, its own params):
    a new ``featvis.steps`` reruns featvis only, not mining, patches, reconstructions, activation maps
    or the other analyses; the rebuild after it is a no-op."""
    from sitegen.analyses import featvis as featvis_mod
    from sitegen.analyses.registry import REGISTRY
    from sitegen.build import analyze, mining, sprites
    from sitegen.store.formats import FeatVisDoc

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    spec_path = copy / "experiments.yaml"
    spec_path.write_text(spec_path.read_text().replace("steps: 4", "steps: 3"))
    store = Store(copy / "output" / "store")
    before = store.read_manifest("net", "epoch-2")
    ck = store.checkpoint_dir("net", "epoch-2")
    others = {k: (ck / f"{k}.json").read_bytes() for k in before.techniques}

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("called")

    for module, stage in (
        (mining, "mine"),
        (sprites, "reconstruct_topk"),
        (sprites, "extract_patches"),
        (analyze, "activation_maps"),
        (analyze, "filter_grid"),
    ):
        monkeypatch.setattr(module, stage, boom)
    for kind in REGISTRY.values():
        if kind.name != "featvis":
            monkeypatch.setattr(kind.analysis(), "run", boom)
    ran: list[int] = []
    real = featvis_mod.run
    monkeypatch.setattr(featvis_mod, "run", lambda *a, **k: ran.append(1) or real(*a, **k))

    result = build(load_spec(spec_path), render=False)
    assert ran == [1] and (result.computed, result.cached) == (0, 2)
    after = store.read_manifest("net", "epoch-2")
    assert after.key == before.key and after.techniques == before.techniques
    assert after.analysis_keys["featvis"] != before.analysis_keys["featvis"]
    assert {k: v for k, v in after.analysis_keys.items() if k != "featvis"} == {
        k: v for k, v in before.analysis_keys.items() if k != "featvis"
    }
    assert store.read_analysis("net", "epoch-2", FeatVisDoc).steps == 3
    for kind, data in others.items():  # the other documents are the same bytes
        if kind != "featvis":
            assert (ck / f"{kind}.json").read_bytes() == data, kind

    monkeypatch.setattr(featvis_mod, "run", boom)  # now current: nothing reruns
    build(load_spec(spec_path), render=False)


def test_turning_an_analysis_off_drops_it_without_computing(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sitegen.build import network

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    spec_path = copy / "experiments.yaml"
    text = spec_path.read_text().replace("  top_k: 4\n", "  top_k: 4\n  gradcam: {enabled: false}\n")
    spec_path.write_text(text)

    def no_load(*_a: object, **_k: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(network, "load_model", no_load)
    result = build(load_spec(spec_path))
    assert (result.computed, result.cached) == (0, 2)
    m = Store(copy / "output" / "store").read_manifest("net", "epoch-2")
    assert "gradcam" not in m.techniques and "gradcam" not in m.analysis_keys and "occlusion" in m.techniques
    assert 'id="gradcam"' not in (copy / "output/site/net/index.html").read_text()


def test_a_stale_embedding_recomputes_its_features_only(built: Path, tmp_path: Path) -> None:
    """Features are not stored: a changed embedding reruns one feature pass, and the mining results,
    sprites and other documents stay as they were."""
    from sitegen.store.formats import EmbeddingDoc

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    spec_path = copy / "experiments.yaml"
    text = spec_path.read_text().replace("  top_k: 4\n", "  top_k: 4\n  embedding: {method: pca}\n")
    spec_path.write_text(text)
    store = Store(copy / "output" / "store")
    ck = store.checkpoint_dir("net", "epoch-2")
    kept = {p: p.read_bytes() for p in (ck / "mined.npz", ck / "gradcam.json", ck / "classes.npz")}
    result = build(load_spec(spec_path), render=False)
    assert (result.computed, result.cached) == (0, 2)
    assert store.read_analysis("net", "epoch-2", EmbeddingDoc).method == "pca"
    assert all(p.read_bytes() == data for p, data in kept.items())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("gradcam", "{layer: conv9}", "analyses.gradcam.layer: no layer 'conv9' in net"),
        ("featvis", "{enabled: true, layers: [conv9]}", "analyses.featvis.layers: none of ['conv9']"),
    ],
)
def test_unknown_technique_layer_is_one_line(tmp_path: Path, key: str, value: str, message: str) -> None:
    spec = f"""\
datasets:
  d: {{builtin: doodles, classes: [circle, square], images_per_class: 4, image_size: 32}}
networks:
  net: {{arch: zoo:alexnet_small, dataset: d, units: 2}}
analyses:
  reconstructions: {{enabled: false}}
  {key}: {value}
"""
    (tmp_path / "experiments.yaml").write_text(spec)
    result = CliRunner().invoke(app, ["build", str(tmp_path / "experiments.yaml")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_fc_layers_without_reconstructions_have_no_sprites_and_still_render(tmp_path: Path) -> None:
    """An fc unit's patch is its whole probe image: with no reconstruction method there is no sprite
    to write, and its page shows the stored probe images instead (issue 13, item 4)."""
    spec = """\
datasets:
  d: {builtin: doodles, classes: [circle, square, star], images_per_class: 6, image_size: 32}
networks:
  net: {arch: zoo:alexnet_small, dataset: d, units: 3}
analyses:
  top_k: 4
  reconstructions: {enabled: false}
  featvis: {enabled: false}
  empirical_rf: {enabled: false}
"""
    (tmp_path / "experiments.yaml").write_text(spec)
    result = CliRunner().invoke(app, ["build", str(tmp_path / "experiments.yaml"), "--check"])
    assert result.exit_code == 0, result.output
    store = Store(tmp_path / "output" / "store")
    m = store.read_manifest("net", "init")
    assert "fc6" not in m.sprites and m.sprites["conv1"].panels == ["patches"]
    assert not (store.checkpoint_dir("net", "init") / "units" / "fc6").exists()
    u = m.shown_units["fc6"][0]
    page = (tmp_path / "output" / "site" / "net" / "fc6" / f"unit-{u:04d}.html").read_text()
    first = int(store.read_arrays("net", "init", "mined")["fc6/images"][u, 0])
    assert f"img/d/{first}.png" in page


def test_sprites_written_in_unit_chunks_equal_one_pass(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crop layers go SPRITE_CHUNK units at a time to bound RAM: the sprites are the same bytes."""
    from sitegen.build import sprites

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    spec = load_spec(copy / "experiments.yaml")
    store = Store(spec.output / "store")
    units = store.checkpoint_dir("net", "epoch-2") / "units"
    reference = {p.relative_to(units): p.read_bytes() for p in sorted(units.rglob("*.webp"))}
    (store.checkpoint_dir("net", "epoch-2") / "manifest.json").unlink()
    shutil.rmtree(units)
    monkeypatch.setattr(sprites, "SPRITE_CHUNK", 1)
    assert build(spec, render=False).computed == 1
    again = {p.relative_to(units): p.read_bytes() for p in sorted(units.rglob("*.webp"))}
    assert again == reference and len(reference) > 10


def test_sprite_cell_setting_shrinks_every_cell_and_keys_the_entry(tmp_path: Path) -> None:
    """``analyses.reconstructions.cell`` caps the side of every sprite cell (site size, issue 13); its
    default leaves the entry key as it was before the setting existed, any other value changes it."""
    from PIL import Image

    from sitegen.build.keys import _entry_key

    base = """\
datasets:
  d: {builtin: doodles, classes: [circle, square, star], images_per_class: 6, image_size: 64}
networks:
  net: {arch: zoo:alexnet_small, dataset: d, units: 2}
analyses:
  top_k: 4
  featvis: {enabled: false}
  empirical_rf: {enabled: false}
"""
    layouts = {}
    for cell in (None, 16):
        root = tmp_path / f"cell-{cell}"
        root.mkdir()
        text = base + ("" if cell is None else f"  reconstructions: {{cell: {cell}}}\n")
        (root / "experiments.yaml").write_text(text)
        result = CliRunner().invoke(app, ["build", str(root / "experiments.yaml"), "--no-render"])
        assert result.exit_code == 0, result.output
        store = Store(root / "output" / "store")
        m = store.read_manifest("net", "init")
        layouts[cell] = m.sprites
        for layer, lay in m.sprites.items():
            u = m.shown_units[layer][0]
            with Image.open(store.sprite_path("net", "init", layer, u)) as im:
                assert im.size == (lay.cell * lay.cols * len(lay.panels), lay.cell * lay.rows)
    assert layouts[None].keys() == layouts[16].keys()
    assert all(layouts[16][k].cell == min(16, v.cell) for k, v in layouts[None].items())
    assert any(v.cell > 16 for v in layouts[None].values())

    def key(extra: str) -> str:
        (tmp_path / "k.yaml").write_text(base + extra)
        return _entry_key(load_spec(tmp_path / "k.yaml"), "net", "init", "fp", (0.5,), (0.5,))

    assert key("") == key("  reconstructions: {cell: 96}\n") != key("  reconstructions: {cell: 64}\n")
