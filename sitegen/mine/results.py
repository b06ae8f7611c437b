"""What mining hands on: :class:`LayerTopK` per layer and :class:`Mined` for the whole pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sitegen.store.activations import Activations

#: Top-5 predictions are padded with this class index when the model has fewer than 5 classes.
EMPTY = -1


@dataclass(frozen=True, slots=True)
class LayerTopK:
    """The top-k probe images of every unit of one layer, best first.

    Entry ``[u, r]`` is unit ``u``'s rank ``r + 1`` image. Ties are broken by image index
    (ascending). When the probe split has fewer than ``k`` images the trailing slots are empty:
    ``images == -1``, ``rows == cols == -1`` and ``values`` is NaN.

    Attributes:
        values: float32[U, k], the unit's maximum over the image (post-ReLU for ``conv`` layers
            whose module is the ReLU).
        images: int64[U, k], probe image indices (global, whatever the sharding).
        rows: int32[U, k], row of the maximum in the layer's map (0 for linear and prob layers).
        cols: int32[U, k], column of the maximum (0 for linear and prob layers).
    """

    values: np.ndarray
    images: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    @property
    def k(self) -> int:
        """Slots per unit."""
        return int(self.images.shape[1])


@dataclass(frozen=True)
class Mined:
    """Everything the analyses need from the single pass over the probe split.

    Attributes:
        layers: friendly layer name -> :class:`LayerTopK`, in the order of ``LoadedModel.layers``.
        labels: int64[N], the probe labels.
        top5: int64[N, 5], the five most probable classes per image, most probable first
            (ties by class index; ``-1`` pads when the model has fewer than 5 classes).
        top5_prob: float32[N, 5], their softmax probabilities (0 in padded slots).
        features: float32[N, D], the input of the model's last ``nn.Linear`` (penultimate
            features) when requested, else None.
        activations: the per-image maxima file (``mine(activations=PATH)``), else None.
    """

    layers: dict[str, LayerTopK]
    labels: np.ndarray
    top5: np.ndarray
    top5_prob: np.ndarray
    features: np.ndarray | None = None
    activations: Activations | None = None
