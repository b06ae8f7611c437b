"""The data stage: a dataset spec in, train/probe splits of un-normalized images out.

``build_data(name, DatasetSpec, seed)`` returns a :class:`DataBundle`: class names, and two torch
datasets (``train``, ``probe``) of ``(float Tensor[3, H, W] in [0, 1], int label)``, every image
square and ``image_size`` px (shorter side resized, then centre-cropped). Normalization is not applied
here: the models stage does it on the device (``docs/INTERNALS.md``).

Sources:

- ``builtin: doodles``: :mod:`sitegen.doodles`, ``images_per_class`` per class.
- ``path:``: an ImageFolder tree (``root/<class>/**/<image>``), split per class into train/probe.
- ``train_path`` + ``probe_path``: two trees; the classes are the train tree's.

Decisions worth knowing:

- **Class order** (= label order): doodles keep :data:`~sitegen.doodles.CLASSES` order; folders use
  sorted folder names (as torchvision's ImageFolder); a list under ``classes:`` keeps the list's order.
  ``{top: N}`` keeps the N classes with the most image files (ties by name), then orders them as
  ``all`` would. Every doodles class has the same count, so ``top: N`` is the first N of ``CLASSES``.
- **Split**: per class, files are ranked by a hash of ``(seed, class, relative path)``; the first
  ``max_per_class`` readable ones are kept and the first ``round(n * probe_fraction)`` of those (at
  least one, and at least one left for training, when the class has two or more) go to the probe
  split. A hash rank, unlike a shuffle, moves at most one image when a file is added. Within a split,
  images are grouped by class, then sorted by path (doodles: by index).
- **max_per_class** caps each class before the split, so each split stays under it and
  ``probe_fraction`` still holds; with two trees it caps each tree's class.
- **Unreadable files** are found up front and skipped with one warning for the whole dataset. An
  image file is one with a ``.png .jpg .jpeg .webp .bmp`` suffix (any case); other files and hidden
  (``.``-prefixed) files and folders are ignored.
- **Preloading**: when every image fits in :data:`PRELOAD_MAX_BYTES` as uint8 (20k images at 128 px,
  80k at 64 px), all are decoded once, here, into one uint8 tensor: epochs and mining then cost no
  decoding and need no DataLoader workers. Larger sets are checked with ``Image.verify()`` (header and
  checksums) and decoded lazily in ``__getitem__``, where DataLoader workers parallelize it.
- **Fingerprint**: SHA-256 of the source kind, class names, split parameters and, per image, its
  relative path, size and ``mtime_ns`` (doodles: drawing version, seed and indices). Not the dataset's
  name nor its absolute root, so renaming the key or moving the tree keeps cached results.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import os
import struct
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset

from sitegen import doodles
from sitegen.errors import DataError
from sitegen.spec import DatasetSpec, MeanStd, TopClasses

log = logging.getLogger(__name__)

#: Suffixes (lower-cased) of files treated as images in ImageFolder trees.
IMAGE_EXTENSIONS = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".webp"})
#: Decode everything up front when the uint8 cache of all images stays under this many bytes.
PRELOAD_MAX_BYTES = 1 << 30
#: Bump when preprocessing (resize, crop, colour conversion) changes pixels: part of the fingerprint.
FORMAT = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What Pillow raises on a corrupt, truncated or hostile file, depending on the format plugin.
_UNREADABLE = (
    OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, Image.DecompressionBombError,
)

Triple = tuple[float, float, float]


# --- the hand-off --------------------------------------------------------------------------------------


class ImageSet(Dataset):
    """One split: ``(float Tensor[3, H, W] in [0, 1], label)`` per image, un-normalized.

    Attributes:
        ids: one name per image: the path relative to its tree root (``cat/001.jpg``), or
            ``<class>/<index>`` for doodles. Provenance for pages and the fingerprint.
        labels: int64 label per image (read-only).
        preloaded: whether images sit decoded in memory (else each access decodes a file).
    """

    def __init__(
        self,
        source: _Source,
        ids: Sequence[str],
        labels: Sequence[int],
        cache: torch.Tensor | None = None,
        disk: DiskCache | None = None,
    ) -> None:
        self.source = source
        self.ids = tuple(ids)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.labels.setflags(write=False)
        self._cache = cache  # uint8 [N, 3, H, W], or None to decode lazily
        self._disk = disk  # or: decode once, then read back from a file (RAM flat in N)

    @property
    def preloaded(self) -> bool:
        return self._cache is not None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.uint8(index).float().div_(255), int(self.labels[index])

    def uint8(self, index: int) -> torch.Tensor:
        """Image ``index`` as a uint8 tensor ``[3, H, W]`` (a view when preloaded: do not modify)."""
        if not 0 <= index < len(self.ids):
            raise IndexError(f"image {index} out of range for a split of {len(self.ids)}")
        if self._cache is not None:
            return self._cache[index]
        if self._disk is not None:
            return torch.from_numpy(self._disk.get(index, lambda: self.source.load(self.ids[index])))
        return torch.from_numpy(self.source.load(self.ids[index])).permute(2, 0, 1).contiguous()

    def image(self, index: int) -> np.ndarray:
        """Image ``index`` as a new uint8 array ``[H, W, 3]`` (thumbnails, patches)."""
        return self.uint8(index).permute(1, 2, 0).numpy().copy()


class DiskCache:
    """Decoded uint8 images ``[N, 3, H, W]`` in one file, filled on first access, read back with pread.

    Why: holding a probe set decoded in RAM grows with it (3,040 images at 224 px: 460 MB; 10,000:
    1.5 GB), and decoding PNGs on every access caps mining and reconstructions (issue 13). Here each
    image is decoded once, written to its slot, and then read from the page cache, which the kernel
    may drop: the process's RSS stays flat in the probe set. A one-byte-per-image fill map, written
    after the slot, says which slots hold pixels, so a killed build, DataLoader workers and torchrun
    ranks (separate processes writing disjoint slots) all leave a consistent cache. The file name
    carries the dataset fingerprint: changed files get a new cache (older ones are removed).
    """

    def __init__(self, path: Path, count: int, image_size: int) -> None:
        self.path = path
        self.count = count
        self.shape = (3, image_size, image_size)
        self.nbytes = 3 * image_size * image_size
        self._fds: tuple[int, int, int] | None = None  # (pid, data fd, fill-map fd), per process
        fill = self._fill_path
        if not (path.is_file() and fill.is_file() and path.stat().st_size == count * self.nbytes):
            path.parent.mkdir(parents=True, exist_ok=True)
            for f, size in ((path, count * self.nbytes), (fill, count)):
                with open(f, "wb") as fh:
                    fh.truncate(size)  # sparse: disk is used as slots fill

    @property
    def _fill_path(self) -> Path:
        return self.path.with_suffix(".filled")

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own descriptors
        return {**self.__dict__, "_fds": None}

    def _open(self) -> tuple[int, int]:
        if self._fds is None or self._fds[0] != os.getpid():
            self._fds = (os.getpid(), os.open(self.path, os.O_RDWR), os.open(self._fill_path, os.O_RDWR))
        return self._fds[1], self._fds[2]

    def get(self, index: int, load: Any) -> np.ndarray:
        """Image ``index`` as uint8 ``[3, H, W]``; ``load()`` decodes it (``[H, W, 3]``) when not cached."""
        data, fill = self._open()
        if os.pread(fill, 1, index) == b"\x01":
            buf = os.pread(data, self.nbytes, index * self.nbytes)
            if len(buf) == self.nbytes:
                return np.frombuffer(bytearray(buf), dtype=np.uint8).reshape(self.shape)
        chw = np.ascontiguousarray(np.asarray(load(), dtype=np.uint8).transpose(2, 0, 1))
        os.pwrite(data, chw.tobytes(), index * self.nbytes)
        os.pwrite(fill, b"\x01", index)
        return chw


def _disk_cache(cache_dir: Path | None, name: str, split: str, fingerprint: str, count: int, size: int):
    if cache_dir is None:
        return None
    stem = f"{_safe_name(name)}-{split}-"
    path = cache_dir / f"{stem}{fingerprint}-{size}px-v{FORMAT}.u8"
    if cache_dir.is_dir():
        for old in cache_dir.glob(f"{stem}*"):
            if old.stem != path.stem:
                old.unlink(missing_ok=True)
    return DiskCache(path, count, size)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


@dataclass(frozen=True, slots=True)
class DataBundle:
    """A dataset ready for training and mining.

    Attributes:
        name: the dataset's key in the spec.
        class_names: class names in label order, verbatim (folder names are not escaped here).
        image_size: side of every (square) image in pixels.
        train: the training split (also the one :func:`dataset_stats` measures).
        probe: the split the atlas mines and shows; images are identified by their index in it.
        fingerprint: 16 hex digits identifying the content (see the module docstring).
        source: where the images came from: ``builtin:doodles`` or the tree root(s).
    """

    name: str
    class_names: tuple[str, ...]
    image_size: int
    train: ImageSet
    probe: ImageSet
    fingerprint: str
    source: str = ""
    # dataset_stats() result, computed on first use: a dict because the bundle itself is frozen
    _stats: dict[str, tuple[Triple, Triple]] = field(default_factory=dict, repr=False, compare=False)


# --- image sources -----------------------------------------------------------------------------------


# Sources travel to DataLoader workers by pickle: plain frozen dataclasses (frozen + slots only
# unpickles from Python 3.10.1 on).
@dataclass(frozen=True)
class _FolderSource:
    root: Path
    image_size: int

    def load(self, image_id: str) -> np.ndarray:
        path = self.root / image_id
        try:
            return load_image(path, self.image_size)
        except _UNREADABLE as e:  # it passed verify() while indexing, then failed to decode
            raise DataError(f"{path}: cannot decode image ({e}); replace or delete the file") from None


@dataclass(frozen=True)
class _DoodleSource:
    seed: int
    image_size: int

    def load(self, image_id: str) -> np.ndarray:
        name, _, index = image_id.rpartition("/")
        img = doodles.make_doodle(name, int(index), self.image_size, self.seed)
        return np.array(img.convert("RGB"), dtype=np.uint8)


_Source = _FolderSource | _DoodleSource


# --- decoding ----------------------------------------------------------------------------------------


def load_image(path: str | Path, image_size: int) -> np.ndarray:
    """Decode one file to uint8 RGB ``[image_size, image_size, 3]``.

    Any mode becomes RGB: grayscale and 1-bit are replicated, palette is looked up, transparency
    (RGBA, LA, palette with a transparent colour) is composited on white, CMYK and other colour
    spaces are converted, 16-bit and float images are scaled to 8 bits. EXIF orientation is applied.
    Then the shorter side is resized to ``image_size`` (bilinear, antialiased) and the centre cropped.

    Raises:
        OSError, ValueError, SyntaxError, ...: whatever Pillow raises on a corrupt file.
    """
    with Image.open(path) as im:
        im.draft(im.mode, (image_size, image_size))  # JPEG: decode at a reduced scale, still >= size
        im = ImageOps.exif_transpose(im)
        return np.array(_square(_to_rgb(im), image_size), dtype=np.uint8)  # a writable copy


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Pillow's convert() clips these at 255 instead of scaling: scale by the range the values use
        a = np.asarray(im, dtype=np.float64)
        peak = a.max(initial=0)
        if im.mode.startswith("I;16") or peak > 255:
            top = 65535.0
        elif im.mode == "F" and peak <= 1:
            top = 1.0
        else:
            top = 255.0
        im = Image.fromarray((np.clip(a / top, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    elif im.mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def _square(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, then the centre ``size`` x ``size`` (torchvision Resize + CenterCrop)."""
    w, h = im.size
    if min(w, h) != size:
        short, long = (w, h) if w <= h else (h, w)
        long = max(size, int(size * long / short))
        im = im.resize((size, long) if w <= h else (long, size), Image.Resampling.BILINEAR)
        w, h = im.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return im.crop((left, top, left + size, top + size)) if (w, h) != (size, size) else im


# --- building ----------------------------------------------------------------------------------------


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
                return load_image(path, self.image_size)
            with Image.open(path) as im:  # header and checksums, no pixels: for large lazy sets
                im.verify()
            return True
        except _UNREADABLE:
            return None


def _image_set(
    source: _Source, items: list[tuple[str, int]], preload: bool, pool: ThreadPoolExecutor | None,
    decoded: dict[Path, np.ndarray],
    disk: DiskCache | None = None,
) -> ImageSet:
    ids = [i for i, _ in items]
    cache = None
    if preload and disk is None:
        size = source.image_size
        cache = torch.empty((len(ids), 3, size, size), dtype=torch.uint8)
        root = source.root if isinstance(source, _FolderSource) else None

        def pixels(image_id: str) -> np.ndarray:
            found = decoded.pop(root / image_id, None) if root is not None else None
            return found if found is not None else source.load(image_id)

        for k, arr in enumerate(pool.map(pixels, ids) if pool is not None else map(pixels, ids)):
            cache[k] = torch.from_numpy(arr).permute(2, 0, 1)
    return ImageSet(source, ids, [label for _, label in items], cache, disk)


def _select(
    name: str, wanted: Any, counts: Mapping[str, int], where: str, *, canonical: bool = False
) -> list[str]:
    """Apply ``classes:`` to the available classes (``counts``: images per class, in label order).

    ``canonical``: the order of ``counts`` is itself the meaning (doodles), so ``top: N`` takes the
    first N instead of ranking equal counts by name.
    """
    available = list(counts)
    if wanted == "all":
        return available
    if isinstance(wanted, TopClasses):
        if wanted.top > len(available):
            log.warning("dataset %r: classes: top %d asked, but %s has only %d; using all of them",
                        name, wanted.top, where, len(available))
        ranked = available if canonical else sorted(available, key=lambda c: (-counts[c], c))
        keep = set(ranked[: wanted.top])
        return [c for c in available if c in keep]
    wanted = list(wanted)
    if not wanted:
        raise DataError(f"dataset {name!r}: classes: is an empty list; list class names, or use 'all'")
    dupes = sorted({c for c in wanted if wanted.count(c) > 1})
    if dupes:
        listed = ", ".join(map(repr, dupes))
        raise DataError(f"dataset {name!r}: classes: listed twice: {listed}; list each class once")
    unknown = [c for c in wanted if c not in counts]
    if unknown:
        parts = []
        for c in unknown:
            close = difflib.get_close_matches(c, available, n=1)
            parts.append(f"{c!r} (did you mean {close[0]!r}?)" if close else repr(c))
        known = ", ".join(map(repr, available[:10])) + (", …" if len(available) > 10 else "")
        raise DataError(
            f"dataset {name!r}: classes: not found in {where}: {', '.join(parts)}; known classes: {known}"
        )
    return wanted


def _rank(items: Iterable[str], seed: int, cls: str) -> list[str]:
    """Items ordered by a hash of (seed, class, item): a seeded shuffle that is stable per item."""
    return sorted(items, key=lambda item: hashlib.sha256(f"{seed}\0{cls}\0{item}".encode()).digest())


def _probe_count(n: int, fraction: float) -> int:
    """Probe images of a class of ``n``: rounded share, but both splits non-empty when ``n >= 2``."""
    k = int(n * fraction + 0.5)
    return min(max(k, 1), n - 1) if n >= 2 else k


def _fits(n_images: int, image_size: int) -> bool:
    return n_images * 3 * image_size * image_size <= PRELOAD_MAX_BYTES


def _threads() -> int:
    return min(8, os.cpu_count() or 1)


def _warn_unreadable(name: str, bad: list[Path]) -> None:
    if bad:
        shown = ", ".join(str(p) for p in bad[:3]) + (", …" if len(bad) > 3 else "")
        log.warning("dataset %r: skipped %d unreadable image file(s): %s (replace or delete them)",
                    name, len(bad), shown)


def _split_params(ds: DatasetSpec) -> dict[str, Any]:
    return {"format": FORMAT, "image_size": ds.image_size, "max_per_class": ds.max_per_class,
            "probe_fraction": ds.probe_fraction}


def _file_stats(root: Path, items: list[tuple[str, int]]) -> list[tuple[str, int, int, int]]:
    out = []
    for rel, label in items:
        st = (root / rel).stat()
        out.append((rel, st.st_size, st.st_mtime_ns, label))
    return out


def _fingerprint(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


# --- queries -----------------------------------------------------------------------------------------


def dataset_stats(bundle: DataBundle, *, num_workers: int = 0) -> tuple[Triple, Triple]:
    """Per-channel mean and standard deviation of the train split, images in [0, 1].

    Exact: a 256-bin histogram per channel (from the uint8 pixels) summed in float64. Computed once
    per bundle; lazily decoded sets are read through a DataLoader with ``num_workers``.

    Returns:
        ``((mean_r, mean_g, mean_b), (std_r, std_g, std_b))``, population std (``numpy.std``).
    """
    if "train" not in bundle._stats:
        hist = torch.zeros(3, 256, dtype=torch.int64)
        for batch in _uint8_batches(bundle.train, num_workers):
            for c in range(3):
                hist[c] += torch.bincount(batch[:, c].reshape(-1).long(), minlength=256)
        h = hist.numpy().astype(np.float64)
        n = h.sum(axis=1)
        if not n.all():
            raise DataError(f"dataset {bundle.name!r}: the train split is empty; cannot compute its mean/std")
        v = np.arange(256, dtype=np.float64) / 255
        mean = (h * v).sum(axis=1) / n
        var = np.maximum((h * (v - mean[:, None]) ** 2).sum(axis=1) / n, 0)
        bundle._stats["train"] = (_triple(mean), _triple(np.sqrt(var)))
    return bundle._stats["train"]


def _uint8_batches(split: ImageSet, num_workers: int) -> Iterable[torch.Tensor]:
    if split._cache is not None:
        for start in range(0, len(split), 1024):
            yield split._cache[start : start + 1024]
        return
    yield from DataLoader(_Uint8View(split), batch_size=256, num_workers=num_workers)


class _Uint8View(Dataset):
    def __init__(self, split: ImageSet) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.split.uint8(index)


def _triple(a: np.ndarray) -> Triple:
    return float(a[0]), float(a[1]), float(a[2])


def is_grayscale(split: ImageSet, *, sample: int = 64) -> bool:
    """Whether the split's images are grey (R = G = B), judged on up to ``sample`` of them, evenly spaced.

    Sketch datasets (TU-Berlin, the doodles) are grey; their filters and reconstructions are then
    drawn in grey (:func:`sitegen.analyses.filters.filter_grid`), since their colour channels apart
    carry only differences the network never sees.
    """
    n = len(split)
    if n == 0:
        return False
    picks = np.unique(np.linspace(0, n - 1, min(sample, n)).round().astype(int))
    for i in picks:
        x = split.uint8(int(i))
        if not (torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])):
            return False
    return True


def probe_image(bundle: DataBundle, index: int) -> np.ndarray:
    """Probe image ``index`` as uint8 ``[H, W, 3]``, un-normalized (thumbnails, patches)."""
    return bundle.probe.image(index)


def probe_labels(bundle: DataBundle) -> np.ndarray:
    """Label of every probe image, int64 ``[N]`` (a copy)."""
    return bundle.probe.labels.copy()


def class_counts(bundle: DataBundle) -> dict[str, tuple[int, int]]:
    """``{class: (n_train, n_probe)}`` in label order."""
    k = len(bundle.class_names)
    train = np.bincount(bundle.train.labels, minlength=k)
    probe = np.bincount(bundle.probe.labels, minlength=k)
    return {c: (int(train[i]), int(probe[i])) for i, c in enumerate(bundle.class_names)}


def resolve_normalization(
    norm: str | MeanStd, bundle: DataBundle, weights_meta: Mapping[str, Any] | None = None
) -> tuple[str, Triple, Triple]:
    """Turn a network's ``normalization:`` into the mean/std its inputs are normalized with.

    Args:
        norm: ``"imagenet"``, ``"dataset"`` (train-split stats), ``"none"`` (mean 0, std 1), a
            :class:`~sitegen.spec.MeanStd`, or ``"auto"``: the weights' own mean/std when
            ``weights_meta`` has them, else the dataset's.
        bundle: the network's dataset.
        weights_meta: optional mapping with ``"mean"`` and ``"std"`` (3 floats each), e.g. taken from
            a torchvision weights' ``transforms()``.

    Returns:
        ``(kind, mean, std)`` with kind one of ``imagenet``, ``dataset``, ``none``, ``custom``, ``weights``.

    Raises:
        DataError: the dataset's std is zero in a channel (a constant image set cannot be normalized).
    """
    if isinstance(norm, MeanStd):
        return "custom", _triple(np.asarray(norm.mean)), _triple(np.asarray(norm.std))
    if norm == "imagenet":
        return "imagenet", IMAGENET_MEAN, IMAGENET_STD
    if norm == "none":
        return "none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    own = weights_meta or {}
    if norm == "auto" and own.get("mean") is not None and own.get("std") is not None:
        return "weights", _triple(np.asarray(own["mean"])), _triple(np.asarray(own["std"]))
    if norm in ("auto", "dataset"):
        mean, std = dataset_stats(bundle)
        if min(std) < 1e-6:
            raise DataError(
                f"dataset {bundle.name!r}: the train images are constant in a channel (std {std}); "
                "use normalization: none or imagenet"
            )
        return "dataset", mean, std
    raise ValueError(f"unknown normalization {norm!r}")  # the spec validates it: a bug if reached
