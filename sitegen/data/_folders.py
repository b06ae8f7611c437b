"""ImageFolder trees: indexing ``root/<class>/**/<image>``, picking each class's readable images,
and building a :class:`~sitegen.data.bundle.DataBundle` from one tree or a train and a probe tree."""

from __future__ import annotations

import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sitegen.data import images
from sitegen.data._fingerprint import _file_stats, _fingerprint, _split_params
from sitegen.data._select import _probe_count, _rank, _select
from sitegen.data.bundle import DataBundle, _fits, _image_set
from sitegen.data.cache import _disk_cache
from sitegen.data.images import _UNREADABLE, IMAGE_EXTENSIONS, _FolderSource
from sitegen.errors import DataError
from sitegen.spec import DatasetSpec

log = logging.getLogger("sitegen.data")  # the package's logger, as before the split


@dataclass(frozen=True, slots=True)
class _Tree:
    """An indexed ImageFolder tree: candidate image files per class folder (relative posix paths)."""

    root: Path
    key: str  # the spec key that named it, for messages
    files: dict[str, list[str]]


def _index_tree(name: str, root: Path, key: str) -> _Tree:
    if not root.exists():
        raise DataError(f"dataset {name!r}: {key}: folder not found: {root}; fix the path in the spec")
    if not root.is_dir():
        raise DataError(f"dataset {name!r}: {key}: not a folder: {root}; point it at an ImageFolder root")
    files: dict[str, list[str]] = {}
    loops: list[str] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"dataset {name!r}: {key}: cannot list {root}: {e.strerror or e}") from None
    top = _dir_id(str(root))
    for entry in entries:
        if entry.name.startswith(".") or not _is_dir(entry):
            continue
        if _dir_id(entry.path) == top:  # a link to the root itself is no class
            loops.append(entry.name)
            continue
        found = []
        seen = {top}  # real folders walked (device, inode): a symlink loop is walked once
        for dirpath, dirnames, filenames in os.walk(entry.path, followlinks=True):
            ident = _dir_id(dirpath)
            if ident is None or ident in seen:
                loops.append(Path(dirpath).relative_to(root).as_posix())
                dirnames[:] = []
                continue
            seen.add(ident)
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for f in filenames:
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS:
                    found.append(Path(dirpath, f).relative_to(root).as_posix())
        files[entry.name] = sorted(found)
    if loops:
        shown = ", ".join(loops[:3]) + (", …" if len(loops) > 3 else "")
        log.warning("dataset %r: %s: skipped %d folder(s) already listed through a symlink (a loop?): %s",
                    name, key, len(loops), shown)
    if not files:
        raise DataError(
            f"dataset {name!r}: {key}: no class sub-folders in {root}; "
            f"put the images in one folder per class ({root}/<class>/<image>.png)"
        )
    return _Tree(root, key, files)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; a dangling or looping link is no folder
    except OSError:
        return False


def _dir_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of the real folder behind ``path``; None when it cannot be resolved (ELOOP)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _build_trees(
    name: str,
    ds: DatasetSpec,
    seed: int,
    preload: bool | None,
    tree: _Tree,
    probe_tree: _Tree | None,
    cache_dir: Path | None = None,
) -> DataBundle:
    """One tree split by ``probe_fraction`` (``probe_tree`` None), or a train tree and a probe tree."""
    if probe_tree is not None:
        foreign = sorted(set(probe_tree.files) - set(tree.files))
        if foreign:
            shown = ", ".join(repr(c) for c in foreign[:5]) + (", …" if len(foreign) > 5 else "")
            raise DataError(
                f"dataset {name!r}: probe_path: {len(foreign)} class folder(s) in {probe_tree.root} are not "
                f"in train_path {tree.root}: {shown}; probe classes must be train classes (rename or remove)"
            )
    classes = _select(name, ds.classes, {c: len(f) for c, f in tree.files.items()}, str(tree.root))
    trees = [tree] if probe_tree is None else [tree, probe_tree]
    if preload is None:
        cap = ds.max_per_class or len(max(tree.files.values(), key=len))
        preload = _fits(sum(min(len(t.files.get(c, ())), cap) for t in trees for c in classes), ds.image_size)
    bad: list[Path] = []
    decoded: dict[Path, np.ndarray] = {}  # preloading: decoded while checking, moved into the cache once
    train: list[tuple[str, int]] = []
    probe: list[tuple[str, int]] = []
    no_probe = []
    with ThreadPoolExecutor(_threads()) as pool:
        take = _Taker(name, seed, ds.max_per_class, ds.image_size, preload, pool, bad, decoded)
        for label, cls in enumerate(classes):
            kept = take(tree, cls)
            if probe_tree is None:
                n_probe = _probe_count(len(kept), ds.probe_fraction)
                probe += [(rel, label) for rel in sorted(kept[:n_probe])]
                train += [(rel, label) for rel in sorted(kept[n_probe:])]
                continue
            train += [(rel, label) for rel in sorted(kept)]
            if cls in probe_tree.files:
                probe += [(rel, label) for rel in sorted(take(probe_tree, cls))]
            else:
                no_probe.append(cls)
        _warn_unreadable(name, bad)
        if no_probe:
            log.warning("dataset %r: %d class(es) have no folder in probe_path %s, so no probe images: %s",
                        name, len(no_probe), trees[-1].root, ", ".join(repr(c) for c in no_probe[:5]))
        if not probe:
            raise DataError(
                f"dataset {name!r}: the probe split is empty under {trees[-1].root}; "
                + ("add images or raise probe_fraction" if probe_tree is None else "add probe images")
            )
        kind = "folder" if probe_tree is None else "folders"
        fingerprint = _fingerprint(
            {"kind": kind, "classes": classes, "seed": seed, **_split_params(ds),
             "train": _file_stats(tree.root, train), "probe": _file_stats(trees[-1].root, probe)}
        )
        disk = functools.partial(_disk_cache, cache_dir, name, fingerprint=fingerprint, size=ds.image_size)
        train_src = _FolderSource(tree.root, ds.image_size)
        probe_src = _FolderSource(trees[-1].root, ds.image_size)
        train_set = _image_set(train_src, train, preload, pool, decoded, disk("train", count=len(train)))
        probe_set = _image_set(probe_src, probe, preload, pool, decoded, disk("probe", count=len(probe)))
    source = str(tree.root) if probe_tree is None else f"{tree.root} + {probe_tree.root}"
    return DataBundle(name, tuple(classes), ds.image_size, train_set, probe_set, fingerprint, source)


@dataclass(frozen=True)
class _Taker:
    """Picks a class's images: hash-rank order, readable ones only, up to ``cap``."""

    name: str
    seed: int
    cap: int | None
    image_size: int
    preload: bool
    pool: ThreadPoolExecutor
    bad: list[Path]  # unreadable files found, for the one warning
    decoded: dict[Path, np.ndarray]  # preloading: pixels decoded while checking

    def __call__(self, tree: _Tree, cls: str) -> list[str]:
        ranked = _rank(tree.files[cls], self.seed, cls)
        need = len(ranked) if self.cap is None else min(self.cap, len(ranked))
        kept: list[str] = []
        pos = 0
        while len(kept) < need and pos < len(ranked):  # a batch at a time: unreadable files get replaced
            batch = ranked[pos : pos + need - len(kept)]
            pos += len(batch)
            results = self.pool.map(self._check, [tree.root / r for r in batch])
            for rel, pixels in zip(batch, results, strict=True):
                if pixels is None:
                    self.bad.append(tree.root / rel)
                else:
                    kept.append(rel)
                    if isinstance(pixels, np.ndarray):
                        self.decoded[tree.root / rel] = pixels
        if not kept:
            raise DataError(
                f"dataset {self.name!r}: {tree.key}: class folder {tree.root / cls} has no readable image "
                f"({' '.join(sorted(IMAGE_EXTENSIONS))}); add images, or leave the class out under classes:"
            )
        return kept

    def _check(self, path: Path) -> np.ndarray | bool | None:
        """Decoded pixels (preloading), True (header checked), or None (unreadable)."""
        try:
            if self.preload:
                return images.load_image(path, self.image_size)  # one seam: images.load_image
            with Image.open(path) as im:  # header and checksums, no pixels: for large lazy sets
                im.verify()
            return True
        except _UNREADABLE:
            return None


def _threads() -> int:
    return min(8, os.cpu_count() or 1)


def _warn_unreadable(name: str, bad: list[Path]) -> None:
    if bad:
        shown = ", ".join(str(p) for p in bad[:3]) + (", …" if len(bad) > 3 else "")
        log.warning("dataset %r: skipped %d unreadable image file(s): %s (replace or delete them)",
                    name, len(bad), shown)
