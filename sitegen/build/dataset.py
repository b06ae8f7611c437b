"""A dataset's card in the store and the probe images the pages show.

The card (``DatasetRecord``, ``labels.npy``) is written once per build and dataset; probe images
are written un-normalized as PNG, once per fingerprint, as the entries come to need them.
"""

from __future__ import annotations

import numpy as np
import torch

from sitegen.data import DataBundle, class_counts, is_grayscale, probe_image, probe_labels
from sitegen.spec import Spec
from sitegen.store import Store
from sitegen.store.manifest import DatasetRecord

SAMPLES_PER_CLASS = 4  # thumbnails per class on the dataset card


def _write_dataset(store: Store, bundle: DataBundle, spec: Spec) -> None:
    labels = probe_labels(bundle)
    counts = class_counts(bundle)
    samples = [
        np.flatnonzero(labels == c)[:SAMPLES_PER_CLASS].tolist() for c in range(len(bundle.class_names))
    ]
    ds = spec.datasets[bundle.name]
    store.write_dataset(
        DatasetRecord(
            name=bundle.name,
            source=f"builtin:{ds.builtin}" if ds.builtin else str(ds.path or ds.probe_path),
            fingerprint=bundle.fingerprint,
            class_names=list(bundle.class_names),
            image_size=bundle.image_size,
            n_train=len(bundle.train),
            n_probe=len(bundle.probe),
            counts=[tuple(counts[c]) for c in bundle.class_names],
            samples=samples,
            grayscale=grayscale(spec, bundle),
        )
    )
    np.save(store.dataset_dir(bundle.name) / "labels.npy", labels)
    _write_images(store, bundle, {i for s in samples for i in s})


def grayscale(spec: Spec, bundle: DataBundle) -> bool:
    """The spec's ``grayscale:`` for this dataset, else detected from its probe images."""
    said = spec.datasets[bundle.name].grayscale
    return is_grayscale(bundle.probe) if said is None else said


def _write_images(store: Store, bundle: DataBundle, indices: set[int]) -> None:
    """Probe images the pages show, un-normalized PNG; written once (same fingerprint, same pixels)."""
    fp_file = store.dataset_dir(bundle.name) / "images" / "FINGERPRINT"
    if fp_file.is_file() and fp_file.read_text() != bundle.fingerprint:
        for old in fp_file.parent.glob("*.png"):
            old.unlink()
    fp_file.parent.mkdir(parents=True, exist_ok=True)
    fp_file.write_text(bundle.fingerprint)
    for i in sorted(indices):
        path = store.image_path(bundle.name, int(i))
        if i >= 0 and not path.is_file():
            store.write_png(path, probe_image(bundle, int(i)))


class _ImageCache:
    """Probe images by index, as uint8 arrays (patches) and [0,1] tensors (reconstructions)."""

    def __init__(self, bundle: DataBundle) -> None:
        self.bundle = bundle

    def uint8(self, index: int) -> np.ndarray:
        return probe_image(self.bundle, index)

    def tensor(self, index: int) -> torch.Tensor:
        return self.bundle.probe[index][0]

    def pixels(self, index: int) -> torch.Tensor:
        """uint8 ``[3, H, W]``: :meth:`tensor` is ``pixels(i).float() / 255`` (reconstructions load these)."""
        return self.bundle.probe.uint8(index)
