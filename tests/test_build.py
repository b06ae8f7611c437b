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

    monkeypatch.setattr("sitegen.build.load_model", no_load)
    result = build(load_spec(copy / "experiments.yaml"), render=False)
    assert (result.computed, result.cached) == (0, 2)
    assert Store(copy / "output" / "store").read_network("net").layers == before.layers
