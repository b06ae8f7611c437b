"""A network's ``normalization:`` resolved to the mean and std its inputs are normalized with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sitegen.data.bundle import DataBundle, Triple, _triple
from sitegen.data.stats import dataset_stats
from sitegen.errors import DataError
from sitegen.spec import MeanStd

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
