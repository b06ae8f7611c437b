"""The data stage's hand-off: :class:`ImageSet` (one split) and :class:`DataBundle` (a dataset).

Also how a split is filled (preloaded into one uint8 tensor, backed by a
:class:`~sitegen.data.cache.DiskCache`, or decoded lazily) and the accessors of probe pixels and labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sitegen.data.cache import DiskCache
from sitegen.data.images import _FolderSource, _Source

#: Decode everything up front when the uint8 cache of all images stays under this many bytes.
PRELOAD_MAX_BYTES = 1 << 30

Triple = tuple[float, float, float]


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

def _fits(n_images: int, image_size: int) -> bool:
    return n_images * 3 * image_size * image_size <= PRELOAD_MAX_BYTES


def _triple(a: np.ndarray) -> Triple:
    return float(a[0]), float(a[1]), float(a[2])


def probe_image(bundle: DataBundle, index: int) -> np.ndarray:
    """Probe image ``index`` as uint8 ``[H, W, 3]``, un-normalized (thumbnails, patches)."""
    return bundle.probe.image(index)


def probe_labels(bundle: DataBundle) -> np.ndarray:
    """Label of every probe image, int64 ``[N]`` (a copy)."""
    return bundle.probe.labels.copy()
