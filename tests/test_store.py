"""The artifact store: round trips, atomic writes, format checks, cache keys."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from sitegen.errors import StoreError
from sitegen.store import Store, codecs
from sitegen.store.manifest import FORMAT, CheckpointManifest, Provenance


def manifest(key: str = "k1") -> CheckpointManifest:
    prov = Provenance(
        spec_hash="s",
        section_hash="n",
        checkpoint_hash="c",
        dataset_fingerprint="f",
        sitegen_version="0",
        torch_version="t",
        seed=0,
        device="cpu",
        created="now",
    )
    return CheckpointManifest(
        key=key,
        network="net",
        checkpoint="epoch-1",
        provenance=prov,
        accuracy=0.5,
        top_k=9,
        layers=["conv1"],
        shown_units={"conv1": [0, 1]},
    )


def test_arrays_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path)
    arrays = {
        "conv1/values": np.arange(6, dtype=np.float32).reshape(2, 3),
        "conv1/images": np.array([[3, -1]]),
    }
    store.write_arrays("net", "epoch-1", "mined", arrays)
    back = store.read_arrays("net", "epoch-1", "mined")
    assert set(back) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
        assert back[k].dtype == arrays[k].dtype


def test_png_round_trip_grayscale_and_colour(tmp_path: Path) -> None:
    gray = np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1) * 20, 3, axis=2)
    colour = gray.copy()
    colour[0, 0] = (255, 0, 0)
    for name, img in (("g.png", gray), ("c.png", colour)):
        codecs.write_png(tmp_path / name, img)
        np.testing.assert_array_equal(codecs.read_png(tmp_path / name), img)
    assert codecs.png_size(tmp_path / "g.png") == (4, 3)


def test_manifest_marks_entry_complete_and_keys_cache(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert not store.cached("net", "epoch-1", "k1")
    store.write_manifest(manifest("k1"))
    assert store.cached("net", "epoch-1", "k1")
    assert not store.cached("net", "epoch-1", "k2")
    assert store.read_manifest("net", "epoch-1") == manifest("k1")


def test_crash_mid_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash between the temp write and the rename leaves the previous content and no temp file."""
    target = tmp_path / "a.json"
    codecs.write_json(target, {"v": 1})

    def crash(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        codecs.write_json(target, {"v": 2})
    monkeypatch.undo()
    assert codecs.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_crash_between_files_leaves_entry_incomplete(tmp_path: Path) -> None:
    """Arrays written, manifest not: the entry is not cached, so a rerun recomputes it."""
    store = Store(tmp_path)
    store.write_arrays("net", "epoch-1", "mined", {"x": np.zeros(2)})
    assert not store.cached("net", "epoch-1", "k1")


def test_format_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write_manifest(manifest())
    path = tmp_path / "networks/net/epoch-1/manifest.json"
    data = codecs.read_json(path)
    data["format"] = FORMAT + 1
    codecs.write_json(path, data)
    with pytest.raises(StoreError, match="upgrade sitegen"):
        store.read_manifest("net", "epoch-1")
    assert not store.cached("net", "epoch-1", "k1")


def test_missing_build_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="run `sitegen build` first"):
        Store(tmp_path).read_build()


def test_corrupt_json_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path)
    path = tmp_path / "networks/net/network.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(StoreError, match="unreadable"):
        store.read_network("net")


def test_npz_refuses_pickles(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, a=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(ValueError):
        codecs.read_npz(path)
