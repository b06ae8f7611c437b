"""The data stage on tiny trees written under tmp_path, and on small doodles sets."""

from __future__ import annotations

import io
import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sitegen import doodles
from sitegen.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_data,
    class_counts,
    dataset_stats,
    list_classes,
    probe_image,
    probe_labels,
    resolve_normalization,
)
from sitegen.errors import DataError
from sitegen.spec import DatasetSpec, MeanStd

ODD = '<b>x&"y"'  # a class folder name that must survive verbatim ('/' cannot be in a folder name)
SIZE = 8  # every test image is 12 wide and 8 tall: no resize, the crop takes columns 2..9


def _save(path: Path, img: Image.Image, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt)
    return path


def _rgb(path: Path, value: int) -> Path:
    return _save(path, Image.new("RGB", (12, 8), (value, 255 - value, value // 2)))


def _truncated_png(path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 3 // 4])
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """cat: 6 RGB + 2 broken files; dog: 5 images in unusual modes; ODD: 3 RGB; plus things to ignore."""
    root = tmp_path / "tree"
    for i in range(6):
        _rgb(root / "cat" / f"c{i}.png", 10 * i)
    (root / "cat" / "bad.png").write_bytes(b"this is not an image")
    _truncated_png(root / "cat" / "trunc.png")
    (root / "cat" / "notes.txt").write_text("not an image, ignored")
    dog = root / "dog"
    _save(dog / "gray.png", Image.new("L", (12, 8), 100))
    _save(dog / "cmyk.JPG", Image.new("CMYK", (12, 8), (0, 255, 255, 0)))  # red, upper-case suffix
    rgba = Image.new("RGBA", (12, 8), (0, 0, 0, 0))  # left half opaque blue, right half transparent
    rgba.paste((0, 0, 255, 255), (0, 0, 6, 8))
    _save(dog / "rgba.png", rgba)
    pal = Image.new("P", (12, 8), 1)
    pal.putpalette([0, 0, 0, 0, 128, 0] + [0] * 762)
    _save(dog / "palette.png", pal)
    _save(dog / "deep.png", Image.fromarray(np.full((8, 12), 32896, dtype=np.uint16)))  # 16-bit, 0x8080
    for i in range(3):
        _rgb(root / ODD / f"o{i}.png", 200 + i)
    _rgb(root / ".hidden" / "h.png", 0)
    (root / "README.txt").write_text("ignored")
    return root


def _spec(**kw) -> DatasetSpec:
    kw.setdefault("image_size", SIZE)
    kw.setdefault("probe_fraction", 0.5)
    return DatasetSpec(**kw)


def _pixels(bundle, image_id: str) -> np.ndarray:
    """uint8 [H, W, 3] of the image with this id, whichever split holds it."""
    for split in (bundle.train, bundle.probe):
        if image_id in split.ids:
            return split.image(split.ids.index(image_id))
    raise KeyError(image_id)


# --- ImageFolder trees ----------------------------------------------------------------------------------


def test_folder_classes_counts_and_split(tree):
    b = build_data("t", _spec(path=tree), seed=0)
    assert b.class_names == (ODD, "cat", "dog")  # sorted folder names, verbatim
    assert class_counts(b) == {ODD: (1, 2), "cat": (3, 3), "dog": (2, 3)}
    assert b.image_size == SIZE
    assert set(b.train.ids).isdisjoint(b.probe.ids)
    assert sorted(b.train.ids + b.probe.ids) == sorted(
        [f"cat/c{i}.png" for i in range(6)]
        + ["dog/gray.png", "dog/cmyk.JPG", "dog/rgba.png", "dog/palette.png", "dog/deep.png"]
        + [f"{ODD}/o{i}.png" for i in range(3)]
    )
    assert list(probe_labels(b)) == sorted(probe_labels(b))  # grouped by class, in label order
    assert probe_labels(b).dtype == np.int64


def test_unreadable_files_are_skipped_with_one_warning(tree, caplog):
    with caplog.at_level(logging.WARNING, logger="sitegen.data"):
        build_data("t", _spec(path=tree), seed=0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "skipped 2 unreadable" in msg
    assert str(tree / "cat" / "bad.png") in msg and str(tree / "cat" / "trunc.png") in msg


@pytest.mark.parametrize("preload", [True, False])
def test_every_image_mode_becomes_rgb(tree, preload):
    b = build_data("t", _spec(path=tree), seed=0, preload=preload)
    assert b.train.preloaded is preload
    np.testing.assert_array_equal(_pixels(b, "dog/gray.png"), np.full((8, 8, 3), 100))
    np.testing.assert_array_equal(_pixels(b, "dog/palette.png"), np.broadcast_to([0, 128, 0], (8, 8, 3)))
    np.testing.assert_array_equal(_pixels(b, "dog/deep.png"), np.full((8, 8, 3), 128))
    rgba = _pixels(b, "dog/rgba.png")  # columns 2..9 of the original: 4 blue, then 4 on white
    np.testing.assert_array_equal(rgba[:, :4], np.broadcast_to([0, 0, 255], (8, 4, 3)))
    np.testing.assert_array_equal(rgba[:, 4:], np.full((8, 4, 3), 255))
    cmyk = _pixels(b, "dog/cmyk.JPG").astype(int)
    assert np.abs(cmyk - [255, 0, 0]).max() <= 8  # JPEG is lossy
    np.testing.assert_array_equal(_pixels(b, "cat/c3.png"), np.broadcast_to([30, 225, 15], (8, 8, 3)))


def test_items_are_float_chw_in_unit_range(tree):
    b = build_data("t", _spec(path=tree), seed=0)
    x, y = b.probe[0]
    assert x.dtype == torch.float32 and x.shape == (3, SIZE, SIZE)
    assert isinstance(y, int) and y == int(probe_labels(b)[0])
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    as_uint8 = (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(as_uint8, probe_image(b, 0))
    loader = torch.utils.data.DataLoader(b.train, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, SIZE, SIZE) and yb.dtype == torch.int64
    with pytest.raises(IndexError):
        b.probe[len(b.probe)]


def test_resize_shorter_side_then_centre_crop(tmp_path):
    root = tmp_path / "geo"
    wide = np.zeros((8, 16, 3), np.uint8)
    wide[..., 0] = np.arange(16) * 10  # red = 10 * column
    _save(root / "a" / "wide.png", Image.fromarray(wide))
    tall = np.zeros((16, 8, 3), np.uint8)
    tall[..., 1] = (np.arange(16) * 10)[:, None]  # green = 10 * row
    _save(root / "a" / "tall.png", Image.fromarray(tall))
    _save(root / "a" / "big.png", Image.new("RGB", (40, 20), (7, 77, 177)))  # resized to 16x8, cropped
    b = build_data("g", _spec(path=root, probe_fraction=0.4), seed=0)
    np.testing.assert_array_equal(_pixels(b, "a/wide.png")[3, :, 0], np.arange(4, 12) * 10)
    np.testing.assert_array_equal(_pixels(b, "a/tall.png")[:, 3, 1], np.arange(4, 12) * 10)
    np.testing.assert_array_equal(_pixels(b, "a/big.png"), np.broadcast_to([7, 77, 177], (8, 8, 3)))


def test_lazy_and_preloaded_give_the_same_bundle(tree):
    a = build_data("t", _spec(path=tree), seed=0, preload=True)
    b = build_data("t", _spec(path=tree), seed=0, preload=False)
    assert (a.class_names, a.train.ids, a.probe.ids, a.fingerprint) == (
        b.class_names, b.train.ids, b.probe.ids, b.fingerprint
    )
    for i in range(len(a.probe)):
        assert torch.equal(a.probe[i][0], b.probe[i][0])
    restored = pickle.loads(pickle.dumps(b.probe))  # DataLoader workers get a pickled copy
    assert torch.equal(restored[1][0], b.probe[1][0])


def test_top_n_keeps_the_largest_classes_ties_by_name(tree, tmp_path):
    b = build_data("t", _spec(path=tree, classes={"top": 2}), seed=0)
    assert b.class_names == ("cat", "dog")  # 8 and 5 image files beat 3
    ties = tmp_path / "ties"
    for cls, n in (("b", 2), ("a", 2), ("c", 3)):
        for i in range(n):
            _rgb(ties / cls / f"{i}.png", i)
    assert build_data("t", _spec(path=ties, classes={"top": 2}), seed=0).class_names == ("a", "c")


def test_listed_classes_keep_the_list_order(tree):
    b = build_data("t", _spec(path=tree, classes=["dog", ODD]), seed=0)
    assert b.class_names == ("dog", ODD)
    assert class_counts(b) == {"dog": (2, 3), ODD: (1, 2)}


def test_max_per_class_caps_each_class_before_the_split(tree, caplog):
    b = build_data("t", _spec(path=tree, max_per_class=2), seed=0)
    assert class_counts(b) == {ODD: (1, 1), "cat": (1, 1), "dog": (1, 1)}
    assert all(not i.endswith(("bad.png", "trunc.png")) for i in b.train.ids + b.probe.ids)


def test_split_is_deterministic_by_seed_and_stable(tree):
    runs = [build_data("t", _spec(path=tree), seed=s) for s in (0, 0, 1, 2, 3)]
    assert runs[0].probe.ids == runs[1].probe.ids and runs[0].train.ids == runs[1].train.ids
    assert len({r.probe.ids for r in runs}) >= 3
    for r in runs:
        assert set(r.train.ids).isdisjoint(r.probe.ids)
        by_class_then_path = sorted(r.probe.ids, key=lambda i: (r.class_names.index(i.split("/")[0]), i))
        assert r.probe.ids == tuple(by_class_then_path)


def test_separate_train_and_probe_trees(tmp_path, caplog):
    for cls in ("a", "b", "c"):
        for i in range(3):
            _rgb(tmp_path / "train" / cls / f"{i}.png", i)
    for cls, n in (("a", 2), ("b", 1)):
        for i in range(n):
            _rgb(tmp_path / "probe" / cls / f"p{i}.png", 50 + i)
    with caplog.at_level(logging.WARNING, logger="sitegen.data"):
        b = build_data("t", _spec(train_path=tmp_path / "train", probe_path=tmp_path / "probe"), seed=0)
    assert b.class_names == ("a", "b", "c")
    assert class_counts(b) == {"a": (3, 2), "b": (3, 1), "c": (3, 0)}
    assert b.probe.ids == ("a/p0.png", "a/p1.png", "b/p0.png")
    assert list(probe_labels(b)) == [0, 0, 1]
    np.testing.assert_array_equal(probe_image(b, 2)[0, 0], [50, 205, 25])
    messages = [r.getMessage() for r in caplog.records]
    assert any("no folder in probe_path" in m and "'c'" in m for m in messages)


def test_probe_classes_must_be_train_classes(tmp_path):
    _rgb(tmp_path / "train" / "a" / "0.png", 0)
    _rgb(tmp_path / "probe" / "a" / "0.png", 0)
    _rgb(tmp_path / "probe" / "zebra" / "0.png", 0)
    pattern = r"probe_path: 1 class folder\(s\) in .*probe are not in train_path .*train: 'zebra'"
    with pytest.raises(DataError, match=pattern):
        build_data("t", _spec(train_path=tmp_path / "train", probe_path=tmp_path / "probe"), seed=0)


# --- errors -------------------------------------------------------------------------------------------


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as e:
        build_data("t", _spec(path=missing), seed=0)
    assert str(e.value) == f"dataset 't': path: folder not found: {missing}; fix the path in the spec"


def test_folder_without_class_folders(tmp_path):
    _rgb(tmp_path / "flat" / "0.png", 0)
    with pytest.raises(DataError, match=r"path: no class sub-folders in .*flat; put the images in one"):
        build_data("t", _spec(path=tmp_path / "flat"), seed=0)


@pytest.mark.parametrize("content", ["text only", "corrupt only"])
def test_class_without_readable_image(tree, content):
    if content == "text only":
        (tree / "empty").mkdir()
        (tree / "empty" / "notes.txt").write_text("x")
    else:
        (tree / "empty").mkdir()
        (tree / "empty" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        build_data("t", _spec(path=tree), seed=0)
    assert f"class folder {tree / 'empty'} has no readable image" in str(e.value)
    assert "\n" not in str(e.value)
    # not selected: no error
    assert build_data("t", _spec(path=tree, classes=["cat"]), seed=0).class_names == ("cat",)


def test_unknown_listed_class_suggests_the_closest(tree):
    with pytest.raises(DataError) as e:
        build_data("t", _spec(path=tree, classes=["catt", "dog", "zzz"]), seed=0)
    msg = str(e.value)
    assert msg.startswith(f"dataset 't': classes: not found in {tree}: 'catt' (did you mean 'cat'?), 'zzz';")
    assert "known classes:" in msg and "'dog'" in msg


def test_empty_and_duplicated_class_lists(tree):
    with pytest.raises(DataError, match="classes: is an empty list"):
        build_data("t", _spec(path=tree, classes=[]), seed=0)
    with pytest.raises(DataError, match="classes: listed twice: 'cat'"):
        build_data("t", _spec(path=tree, classes=["cat", "dog", "cat"]), seed=0)


def test_empty_probe_split(tmp_path):
    _rgb(tmp_path / "one" / "a" / "0.png", 0)
    with pytest.raises(DataError, match="the probe split is empty"):
        build_data("t", _spec(path=tmp_path / "one", probe_fraction=0.25), seed=0)


# --- fingerprint ---------------------------------------------------------------------------------------


def test_fingerprint_follows_content_and_split(tree, tmp_path):
    fp = build_data("t", _spec(path=tree), seed=0).fingerprint
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert build_data("renamed", _spec(path=tree), seed=0).fingerprint == fp
    copy = shutil.copytree(tree, tmp_path / "copy")  # copy2 keeps mtimes: same content, same fingerprint
    assert build_data("t", _spec(path=copy), seed=0).fingerprint == fp
    assert build_data("t", _spec(path=tree), seed=1).fingerprint != fp
    assert build_data("t", _spec(path=tree, probe_fraction=0.3), seed=0).fingerprint != fp
    assert build_data("t", _spec(path=tree, image_size=6), seed=0).fingerprint != fp

    target = tree / "cat" / "c2.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched only
    touched = build_data("t", _spec(path=tree), seed=0).fingerprint
    assert touched != fp
    _save(target, Image.new("RGB", (12, 8), (1, 2, 3)))  # rewritten with other pixels
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    assert build_data("t", _spec(path=tree), seed=0).fingerprint not in (fp, touched)


# --- statistics and normalization ----------------------------------------------------------------------


@pytest.mark.parametrize("preload", [True, False])
def test_dataset_stats_match_numpy(tree, preload):
    b = build_data("t", _spec(path=tree), seed=0, preload=preload)
    ref = np.stack([b.train.image(i) for i in range(len(b.train))]).astype(np.float64) / 255  # [N, H, W, 3]
    mean, std = dataset_stats(b)
    np.testing.assert_allclose(mean, ref.mean(axis=(0, 1, 2)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, ref.std(axis=(0, 1, 2)), rtol=0, atol=1e-12)
    assert dataset_stats(b) is dataset_stats(b)  # computed once per bundle


def test_resolve_normalization(tree):
    b = build_data("t", _spec(path=tree), seed=0)
    stats = dataset_stats(b)
    assert resolve_normalization("imagenet", b) == ("imagenet", IMAGENET_MEAN, IMAGENET_STD)
    assert resolve_normalization("none", b) == ("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert resolve_normalization("dataset", b) == ("dataset", *stats)
    assert resolve_normalization("auto", b) == ("dataset", *stats)
    meta = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    assert resolve_normalization("auto", b, meta) == ("weights", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert resolve_normalization("dataset", b, meta) == ("dataset", *stats)
    custom = MeanStd(mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    assert resolve_normalization(custom, b) == ("custom", (0.1, 0.2, 0.3), (1.0, 2.0, 3.0))


def test_constant_dataset_cannot_be_normalized_by_its_stats(tmp_path):
    for i in range(2):
        _rgb(tmp_path / "c" / "a" / f"{i}.png", 0)
    b = build_data("t", _spec(path=tmp_path / "c"), seed=0)
    with pytest.raises(DataError, match="constant in a channel"):
        resolve_normalization("dataset", b)


# --- doodles -----------------------------------------------------------------------------------------


def test_doodles_bundle():
    ds = DatasetSpec(builtin="doodles", images_per_class=8, probe_fraction=0.25, image_size=32)
    b = build_data("d", ds, seed=0)
    assert b.class_names == doodles.CLASSES
    assert set(class_counts(b).values()) == {(6, 2)}
    assert b.source == "builtin:doodles"
    x, y = b.probe[3]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # gray as RGB
    cls, _, idx = b.probe.ids[3].partition("/")
    assert y == b.class_names.index(cls)
    expected = np.asarray(doodles.make_doodle(cls, int(idx), 32, 0))
    np.testing.assert_array_equal(probe_image(b, 3)[..., 0], expected)
    again = build_data("d", ds, seed=0)
    assert (again.fingerprint, again.train.ids) == (b.fingerprint, b.train.ids)
    assert build_data("d", ds, seed=1).fingerprint != b.fingerprint
    lazy = build_data("d", ds, seed=0, preload=False)
    assert not lazy.probe.preloaded and torch.equal(lazy.probe[3][0], x)


def test_doodles_class_selection():
    ds = DatasetSpec(builtin="doodles", classes={"top": 12}, images_per_class=2, image_size=16)
    top = build_data("d", ds, 0)
    assert top.class_names == doodles.CLASSES[:12]  # equal counts: the canonical order, not by name
    listed = build_data("d", DatasetSpec(builtin="doodles", classes=["wave", "star"], images_per_class=4,
                                         max_per_class=3, image_size=16), 0)
    assert listed.class_names == ("wave", "star")
    assert class_counts(listed) == {"wave": (2, 1), "star": (2, 1)}


@pytest.mark.parametrize(
    ("n", "fraction", "expected"), [(2, 0.1, (1, 1)), (3, 0.9, (1, 2)), (8, 0.25, (6, 2)), (10, 0.25, (7, 3))]
)
def test_both_splits_keep_an_image_of_every_class(n, fraction, expected):
    ds = DatasetSpec(builtin="doodles", classes=["star"], images_per_class=n, probe_fraction=fraction,
                     image_size=8)
    assert class_counts(build_data("d", ds, seed=0)) == {"star": expected}


def test_adding_a_file_moves_at_most_one_image_between_splits(tmp_path):
    root = tmp_path / "grow"
    for i in range(9):
        _rgb(root / "a" / f"{i}.png", i)
    before = set(build_data("g", _spec(path=root, probe_fraction=0.34), seed=0).probe.ids)
    _rgb(root / "a" / "new.png", 99)
    after = set(build_data("g", _spec(path=root, probe_fraction=0.34), seed=0).probe.ids)
    assert len(before) == len(after) == 3
    assert len(before - after) <= 1


# --- planning and odd trees (issue 11) --------------------------------------------------------------


def test_list_classes_reads_no_image_and_needs_two(tree, tmp_path):
    assert list_classes("t", _spec(path=tree)) == build_data("t", _spec(path=tree), seed=0).class_names
    assert list_classes("t", _spec(path=tree, classes=["dog", "cat"])) == ("dog", "cat")
    assert list_classes("d", DatasetSpec(builtin="doodles", classes={"top": 3})) == doodles.CLASSES[:3]
    with pytest.raises(DataError, match=r"^dataset 't': a classifier atlas needs at least 2 classes"):
        list_classes("t", _spec(path=tree, classes=["cat"]))
    with pytest.raises(DataError, match="needs at least 2 classes, found only 'star'"):
        list_classes("d", DatasetSpec(builtin="doodles", classes=["star"]))
    with pytest.raises(DataError, match="'catt' \\(did you mean 'cat'\\?\\)"):
        list_classes("t", _spec(path=tree, classes=["catt", "dog"]))
    # a one-class set is still a dataset for the data stage itself
    assert build_data("t", _spec(path=tree, classes=["cat"]), seed=0).class_names == ("cat",)


def test_symlink_loops_are_walked_once(tmp_path, caplog):
    root = tmp_path / "loops"
    for cls in ("a", "b"):
        for i in range(3):
            _rgb(root / cls / "sub" / f"{i}.png", 40 * i)
    os.symlink("..", root / "a" / "sub" / "up")  # a/sub/up/sub/up/... : a loop
    os.symlink("../..", root / "b" / "sub" / "root")  # the tree root again, inside a class
    os.symlink(".", root / "self")  # the root itself beside the classes: no class
    with caplog.at_level(logging.WARNING):
        b = build_data("t", _spec(path=root), seed=0)
    assert b.class_names == ("a", "b")
    assert class_counts(b) == {"a": (1, 2), "b": (1, 2)}  # every image once (train, probe)
    assert "already listed through a symlink" in caplog.text


def test_unlistable_folder_is_one_line(tmp_path, monkeypatch):
    _rgb(tmp_path / "r" / "a" / "0.png", 0)
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(tmp_path / "r"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)  # root reads any folder: simulate a chmod 000
    with pytest.raises(DataError, match=r"^dataset 't': path: cannot list .*r: Permission denied$"):
        build_data("t", _spec(path=tmp_path / "r"), seed=0)
