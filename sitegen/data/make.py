"""The stage's entries: :func:`build_data` (a spec section in, a :class:`DataBundle` out) and
:func:`list_classes` (the class names alone, for checks before any work)."""

from __future__ import annotations

import functools
from pathlib import Path

from sitegen import doodles
from sitegen.data._fingerprint import _fingerprint, _split_params
from sitegen.data._folders import _build_trees, _index_tree
from sitegen.data._select import _probe_count, _rank, _select
from sitegen.data.bundle import DataBundle, _fits, _image_set
from sitegen.data.cache import _disk_cache
from sitegen.data.images import _DoodleSource
from sitegen.errors import DataError
from sitegen.spec import DatasetSpec


def build_data(
    name: str, ds: DatasetSpec, seed: int, *, preload: bool | None = None, cache_dir: Path | None = None
) -> DataBundle:
    """Build the train/probe splits of one dataset.

    Args:
        name: the dataset's key in the spec (used in messages).
        ds: its spec section.
        seed: the spec's seed: drives the split (and the doodles' drawing).
        preload: decode everything now (True), never (False), or when it fits
            :data:`PRELOAD_MAX_BYTES` (None).
        cache_dir: instead of preloading into RAM, decode each image once into a
            :class:`DiskCache` file there (``sitegen build``: ``output/cache``); ``preload`` is
            then ignored and files are only checked (header and checksums) up front.

    Returns:
        A :class:`DataBundle`; same inputs and files give the same images, order and fingerprint.

    Raises:
        DataError: a folder is missing or has no class sub-folders, a listed class does not exist, a
            selected class has no readable image, or a split ends up empty.

    Example:
        >>> bundle = build_data("doodles", DatasetSpec(builtin="doodles", images_per_class=8), seed=0)
        >>> len(bundle.train), len(bundle.probe), bundle.class_names[:3]
        (96, 32, ('circle', 'square', 'triangle'))
    """
    if cache_dir is not None:
        preload = False
    if ds.builtin == "doodles":
        return _build_doodles(name, ds, seed, preload, cache_dir)
    if ds.path is not None:
        tree = _index_tree(name, ds.path, "path")
        return _build_trees(name, ds, seed, preload, tree, None, cache_dir)
    if ds.train_path is not None and ds.probe_path is not None:
        train_tree = _index_tree(name, ds.train_path, "train_path")
        probe_tree = _index_tree(name, ds.probe_path, "probe_path")
        return _build_trees(name, ds, seed, preload, train_tree, probe_tree, cache_dir)
    raise DataError(f"dataset {name!r}: no source; give 'builtin', 'path', or 'train_path' + 'probe_path'")


def list_classes(name: str, ds: DatasetSpec) -> tuple[str, ...]:
    """The class names :func:`build_data` would give, in label order, without reading any image.

    For checks before any work (:mod:`sitegen.plan`): folders are listed, nothing is decoded. Unlike
    :func:`build_data` (a one-class dataset is still a dataset), fewer than two classes is an error
    here: a classifier atlas compares classes.

    Raises:
        DataError: as :func:`build_data` for a missing folder, no class folders or unknown classes;
            and fewer than two classes.

    Example:
        >>> list_classes("d", DatasetSpec(builtin="doodles", classes=["star", "circle"]))
        ('star', 'circle')
    """
    if ds.builtin == "doodles":
        counts = dict.fromkeys(doodles.CLASSES, ds.images_per_class)
        return _two_classes(name, _select(name, ds.classes, counts, "builtin: doodles", canonical=True))
    root = ds.path if ds.path is not None else ds.train_path
    if root is None:
        raise DataError(f"dataset {name!r}: no source; give 'builtin', 'path', or 'train_path'")
    tree = _index_tree(name, root, "path" if ds.path is not None else "train_path")
    counts = {c: len(f) for c, f in tree.files.items()}
    return _two_classes(name, _select(name, ds.classes, counts, str(tree.root)))


def _two_classes(name: str, classes: list[str]) -> tuple[str, ...]:
    """A classifier atlas compares classes: one class trains a constant and every histogram is flat."""
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(
            f"dataset {name!r}: a classifier atlas needs at least 2 classes, found {found}; "
            "add class folders (one per class) or list more classes under classes:"
        )
    return tuple(classes)


def _build_doodles(
    name: str, ds: DatasetSpec, seed: int, preload: bool | None, cache_dir: Path | None = None
) -> DataBundle:
    counts = dict.fromkeys(doodles.CLASSES, ds.images_per_class)
    classes = _select(name, ds.classes, counts, "builtin: doodles", canonical=True)
    n = min(ds.images_per_class, ds.max_per_class or ds.images_per_class)
    n_probe = _probe_count(n, ds.probe_fraction)
    train: list[tuple[str, int]] = []
    probe: list[tuple[str, int]] = []
    for label, cls in enumerate(classes):
        ranked = [int(i) for i in _rank([str(i) for i in range(n)], seed, cls)]
        probe += [(f"{cls}/{i}", label) for i in sorted(ranked[:n_probe])]
        train += [(f"{cls}/{i}", label) for i in sorted(ranked[n_probe:])]
    if not probe:
        raise DataError(
            f"dataset {name!r}: the probe split is empty; raise images_per_class or probe_fraction"
        )
    if preload is None:
        preload = _fits(len(train) + len(probe), ds.image_size)
    source = _DoodleSource(seed, ds.image_size)
    fingerprint = _fingerprint(
        {"kind": "doodles", "version": doodles.VERSION, "seed": seed, "classes": classes,
         "images_per_class": ds.images_per_class, **_split_params(ds), "train": train, "probe": probe}
    )
    # drawing is pure Python: threads would only contend for the GIL
    disk = functools.partial(_disk_cache, cache_dir, name, fingerprint=fingerprint, size=ds.image_size)
    train_set = _image_set(source, train, preload, None, {}, disk("train", count=len(train)))
    probe_set = _image_set(source, probe, preload, None, {}, disk("probe", count=len(probe)))
    return DataBundle(
        name, tuple(classes), ds.image_size, train_set, probe_set, fingerprint, source="builtin:doodles"
    )
