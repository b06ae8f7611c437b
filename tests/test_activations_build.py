"""Issue 15 end to end on a tiny spec: the build keeps every unit's per-image maximum
(``activations.npy``), resumes with it, computes the distribution from it, and drops both when
``analyses.activations.enabled`` is false."""

from __future__ import annotations

import logging
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sitegen.build import build
from sitegen.spec import load_spec
from sitegen.store import Store
from sitegen.store.activations import stored_activations
from sitegen.store.formats import DistributionDoc

SPEC = """\
title: tiny
seed: 3
datasets:
  d:
    builtin: doodles
    classes: [circle, square, star, spiral]
    images_per_class: 16
    image_size: 32
networks:
  net:
    arch: zoo:alexnet_small
    dataset: d
    units: 3
    train: {epochs: 1, batch_size: 8}
analyses:
  top_k: 4
  batch_size: 5
  reconstructions: {enabled: false}
  activation_maps: {images: 0}
  distribution: {bins: 10, intervals: 3, per_interval: 2}
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("acts")
    (root / "experiments.yaml").write_text(textwrap.dedent(SPEC))
    build(load_spec(root / "experiments.yaml"))
    return root


def _store(root: Path) -> Store:
    return Store(root / "output" / "store")


def test_activations_are_stored_and_match_the_top_k(built: Path) -> None:
    store = _store(built)
    ck = store.checkpoint_dir("net", "epoch-1")
    acts = stored_activations(ck)
    assert acts is not None and acts.path == ck / "activations.npy"
    array = acts.open()
    m = store.read_manifest("net", "epoch-1")
    n = store.read_dataset("d").n_probe
    assert array.dtype == np.float16 and array.shape == (n, acts.columns) and list(acts.offsets) == m.layers
    mined = store.read_arrays("net", "epoch-1", "mined")
    for name in m.layers:
        col = acts.layer(name, array).astype(np.float32)
        k = mined[f"{name}/values"].shape[1]
        want = np.sort(col, axis=0)[::-1][:k].T
        np.testing.assert_array_equal(want, mined[f"{name}/values"].astype(np.float16).astype(np.float32))
    assert not (ck / "partial").exists()


def test_distribution_is_computed_from_them_and_drawn(built: Path) -> None:
    store = _store(built)
    m = store.read_manifest("net", "epoch-1")
    assert "distribution" in m.techniques and "distribution" in m.timings
    doc = store.read_analysis("net", "epoch-1", DistributionDoc)
    assert doc.bins == 10 and set(doc.layers) == set(m.layers)
    conv = doc.layers[m.layers[0]]
    assert conv.rectified and conv.density is not None and len(conv.units) == len(m.shown_units[m.layers[0]])
    assert doc.layers["prob"].density is None and doc.layers["prob"].selectivity is not None
    for i in doc.probe_images():
        assert store.image_path("d", i).is_file()
    site = built / "output" / "site"
    unit = m.shown_units[m.layers[0]][0]
    page = (site / f"net/{m.layers[0]}/unit-{unit:04d}.html").read_text(encoding="utf-8")
    assert 'id="fig-activation"' in page and 'id="intervals"' in page
    layer = (site / f"net/{m.layers[0]}/index.html").read_text(encoding="utf-8")
    assert 'id="fig-density"' in layer and "data-selectivity=" in layer


def test_resumed_build_keeps_the_activations(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after mining: the rerun reloads the mined tables AND the activations, mines nothing."""
    from sitegen.build import mining, sprites

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    spec = load_spec(copy / "experiments.yaml")
    store = _store(copy)
    ck = store.checkpoint_dir("net", "epoch-1")
    reference = (ck / "activations.npy").read_bytes()
    doc_before = (ck / "distribution.json").read_bytes()
    (ck / "manifest.json").unlink()

    def crash(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sprites, "extract_patches", crash)
    with pytest.raises(KeyboardInterrupt):
        build(spec, render=False)
    assert (ck / "partial" / "activations.npy").is_file()
    monkeypatch.undo()
    monkeypatch.setattr(mining, "mine", lambda *a, **k: pytest.fail("a resumed build must not mine again"))
    assert build(spec, render=False).computed == 1
    assert (ck / "activations.npy").read_bytes() == reference
    assert (ck / "distribution.json").read_bytes() == doc_before
    assert not (ck / "partial").exists()


def test_turned_off_there_is_no_file_and_no_distribution(
    built: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    path = copy / "experiments.yaml"
    path.write_text(path.read_text() + "  activations: {enabled: false}\n")
    with caplog.at_level(logging.INFO, logger="sitegen"):
        assert build(load_spec(path), render=False).computed == 1  # the entry key changed
    ck = _store(copy).checkpoint_dir("net", "epoch-1")
    assert not (ck / "activations.npy").exists() and stored_activations(ck) is None
    assert "distribution" not in _store(copy).read_manifest("net", "epoch-1").techniques
    assert "per-image activations" not in caplog.text


def test_build_log_states_the_size(built: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    (_store(copy).checkpoint_dir("net", "epoch-1") / "manifest.json").unlink()
    with caplog.at_level(logging.INFO, logger="sitegen"):
        build(load_spec(copy / "experiments.yaml"), render=False)
    n = _store(copy).read_dataset("d").n_probe
    assert f"per-image activations activations.npy: {n} images x" in caplog.text and " MB" in caplog.text


def test_changed_distribution_params_rerun_it_from_the_stored_file(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sitegen.build import mining

    copy = tmp_path / "copy"
    shutil.copytree(built, copy)
    path = copy / "experiments.yaml"
    path.write_text(path.read_text().replace("bins: 10", "bins: 7"))
    monkeypatch.setattr(mining, "mine", lambda *a, **k: pytest.fail("a refresh must not mine"))
    result = build(load_spec(path), render=False)
    assert (result.computed, result.cached) == (0, 1)
    doc = _store(copy).read_analysis("net", "epoch-1", DistributionDoc)
    assert doc.bins == 7 and all(
        len(u.counts) == 7 for lay in doc.layers.values() for u in lay.units.values()
    )
