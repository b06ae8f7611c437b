"""The decoded-image disk cache: RAM flat in the probe set, each image decoded once (issue 13)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import sitegen.data.images as images_mod
from sitegen.data import build_data
from sitegen.spec import DatasetSpec


def _tree(root: Path, classes: int = 3, per_class: int = 5, size: tuple[int, int] = (20, 14)) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for i in range(per_class):
            path = root / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(path)
    return root


def _spec(root: Path) -> DatasetSpec:
    return DatasetSpec(path=root, image_size=12, probe_fraction=0.4)


def _all(split) -> torch.Tensor:
    return torch.stack([split.uint8(i) for i in range(len(split))])


def test_cached_bundle_equals_the_in_memory_one(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    ram = build_data("d", _spec(root), seed=1, preload=True)
    disk = build_data("d", _spec(root), seed=1, cache_dir=tmp_path / "cache")
    assert not disk.probe.preloaded and disk.fingerprint == ram.fingerprint
    for a, b in ((ram.train, disk.train), (ram.probe, disk.probe)):
        assert a.ids == b.ids
        assert torch.equal(_all(a), _all(b))  # first access: decoded and written
        assert torch.equal(_all(a), _all(b))  # second: read back
        x, label = b[0]
        assert x.dtype == torch.float32 and torch.equal(x, a[0][0]) and label == a[0][1]


def test_a_second_build_decodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path / "tree")
    first = build_data("d", _spec(root), seed=1, cache_dir=tmp_path / "cache")
    want = _all(first.probe)

    def no_decode(*_a, **_k):
        raise AssertionError("a cached image must not be decoded again")

    monkeypatch.setattr(images_mod, "load_image", no_decode)  # where every decode looks it up
    again = build_data("d", _spec(root), seed=1, cache_dir=tmp_path / "cache")
    assert torch.equal(_all(again.probe), want)
    assert not list((tmp_path / "cache").glob("*probe*.u8"))[0].stat().st_size % (3 * 12 * 12)


def test_dataloader_workers_fill_the_same_cache(tmp_path: Path) -> None:
    """Workers are separate processes: each opens its own descriptors and writes disjoint slots."""
    root = _tree(tmp_path / "tree", classes=4, per_class=6)
    ram = build_data("d", _spec(root), seed=2, preload=True)
    disk = build_data("d", _spec(root), seed=2, cache_dir=tmp_path / "cache")
    loaded = torch.cat([x for x, _ in DataLoader(disk.train, batch_size=3, num_workers=2)])
    assert torch.equal(loaded, _all(ram.train).float() / 255)
    fill = next((tmp_path / "cache").glob("*train*.filled")).read_bytes()
    assert fill == b"\x01" * len(disk.train)  # the parent process sees what the workers wrote


def test_changed_files_get_a_new_cache_and_the_old_one_goes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    first = build_data("d", _spec(root), seed=1, cache_dir=tmp_path / "cache")
    _all(first.probe)
    old = sorted(p.name for p in (tmp_path / "cache").iterdir())
    victim = root / first.probe.ids[0]
    Image.fromarray(np.zeros((14, 20, 3), dtype=np.uint8)).save(victim)  # new size/mtime: new fingerprint
    second = build_data("d", _spec(root), seed=1, cache_dir=tmp_path / "cache")
    assert second.fingerprint != first.fingerprint
    new = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert not set(old) & set(new)
    assert int(second.probe.uint8(second.probe.ids.index(first.probe.ids[0])).sum()) == 0


def test_a_torn_slot_is_decoded_again(tmp_path: Path) -> None:
    """A build killed between writing pixels and the fill byte leaves the slot unclaimed."""
    root = _tree(tmp_path / "tree")
    bundle = build_data("d", _spec(root), seed=1, cache_dir=tmp_path / "cache")
    want = bundle.probe.uint8(1).clone()
    data_file = next((tmp_path / "cache").glob("*probe*.u8"))
    fill_file = data_file.with_suffix(".filled")
    raw = bytearray(data_file.read_bytes())
    raw[3 * 12 * 12 : 3 * 12 * 12 + 10] = b"\xff" * 10  # half-written slot 1
    data_file.write_bytes(bytes(raw))
    flags = bytearray(fill_file.read_bytes())
    flags[1] = 0
    fill_file.write_bytes(bytes(flags))
    again = build_data("d", _spec(root), seed=1, cache_dir=tmp_path / "cache")
    assert torch.equal(again.probe.uint8(1), want)


def test_grayscale_is_detected_from_the_images(tmp_path: Path) -> None:
    from sitegen.data import is_grayscale

    colour = build_data("d", _spec(_tree(tmp_path / "colour")), seed=1)
    assert not is_grayscale(colour.probe)
    doodles = DatasetSpec(builtin="doodles", classes=["circle", "star"], images_per_class=4)
    grey = build_data("g", doodles, seed=0)
    assert is_grayscale(grey.probe)
