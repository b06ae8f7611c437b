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

The package, one job per module: :mod:`~sitegen.data.images` (decoding, sources),
:mod:`~sitegen.data.cache` (the on-disk cache), :mod:`~sitegen.data.bundle` (the hand-off types),
:mod:`~sitegen.data.make` (the entries), ``_folders`` (ImageFolder trees), ``_select`` (classes
and split), ``_fingerprint``, :mod:`~sitegen.data.stats` (queries) and
:mod:`~sitegen.data.normalization`.
"""

from sitegen.data.bundle import PRELOAD_MAX_BYTES, DataBundle, ImageSet, Triple, probe_image, probe_labels
from sitegen.data.cache import DiskCache
from sitegen.data.images import FORMAT, IMAGE_EXTENSIONS, load_image
from sitegen.data.make import build_data, list_classes
from sitegen.data.normalization import IMAGENET_MEAN, IMAGENET_STD, resolve_normalization
from sitegen.data.stats import class_counts, dataset_stats, is_grayscale

__all__ = [
    "FORMAT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "PRELOAD_MAX_BYTES",
    "DataBundle",
    "DiskCache",
    "ImageSet",
    "Triple",
    "build_data",
    "class_counts",
    "dataset_stats",
    "is_grayscale",
    "list_classes",
    "load_image",
    "probe_image",
    "probe_labels",
    "resolve_normalization",
]
