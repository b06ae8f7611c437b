"""Questions asked of a built dataset: channel mean/std, whether it is grey, images per class."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sitegen.data.bundle import DataBundle, ImageSet, Triple, _triple
from sitegen.errors import DataError


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


def class_counts(bundle: DataBundle) -> dict[str, tuple[int, int]]:
    """``{class: (n_train, n_probe)}`` in label order."""
    k = len(bundle.class_names)
    train = np.bincount(bundle.train.labels, minlength=k)
    probe = np.bincount(bundle.probe.labels, minlength=k)
    return {c: (int(train[i]), int(probe[i])) for i, c in enumerate(bundle.class_names)}
