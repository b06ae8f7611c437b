"""Documents of the network page, over a few probe images or all of them.

Grad-CAM, occlusion and SmoothGrad maps per probe image, the invariance sweeps, and the 2-D
embedding of the whole probe set.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from sitegen.store.formats.base import AnalysisDoc, RelPath, _Part

__all__ = [
    "EmbeddingDoc",
    "GradCamDoc",
    "GradCamImage",
    "InvarianceDoc",
    "InvarianceKind",
    "OcclusionDoc",
    "OcclusionImage",
    "SmoothGradDoc",
    "SmoothGradImage",
]


# --- gradcam.json -----------------------------------------------------------------------------------


class GradCamImage(_Part):
    index: int
    label: int
    predicted: int
    true_prob: float
    pred_prob: float
    true_peak: float  # max of the raw ReLU'd map (0: no evidence)
    pred_peak: float
    true_png: RelPath  # viridis overlay at image size
    pred_png: RelPath


class GradCamDoc(AnalysisDoc):
    """Grad-CAM (Selvaraju et al. 2017) of the true and the predicted class at ``layer``."""

    KIND: ClassVar[str] = "gradcam"
    layer: str
    grid: list[int]
    images: list[GradCamImage]

    def probe_images(self) -> list[int]:
        return [e.index for e in self.images]


# --- occlusion.json ---------------------------------------------------------------------------------


class OcclusionImage(_Part):
    index: int
    label: int
    predicted: int
    unit: int  # strongest unit of ``layer`` on the intact image
    base_true_prob: float
    base_pred_prob: float
    base_activation: float
    true_prob: list[list[float]]  # [R][C] over occluder centres
    pred_prob: list[list[float]]
    activation: list[list[float]]
    top_class: list[list[int]]


class OcclusionDoc(AnalysisDoc):
    """Occlusion sensitivity (Zeiler & Fergus 2013, Fig. 7); maps over ``rows`` x ``cols`` centres."""

    KIND: ClassVar[str] = "occlusion"
    size: int
    stride: int
    fill: float
    layer: str
    rows: list[float]
    cols: list[float]
    images: list[OcclusionImage]

    def probe_images(self) -> list[int]:
        return [e.index for e in self.images]


# --- embedding.json ---------------------------------------------------------------------------------


class EmbeddingDoc(AnalysisDoc):
    """2-D map of the probe set's penultimate features (one point per probe image)."""

    KIND: ClassVar[str] = "embedding"
    method: str
    dim: int
    x: list[float]
    y: list[float]
    labels: list[int]
    predicted: list[int]

    @model_validator(mode="after")
    def _same_length(self) -> EmbeddingDoc:
        if not len(self.x) == len(self.y) == len(self.labels) == len(self.predicted):
            raise ValueError("x, y, labels and predicted differ in length")
        return self


# --- invariance.json --------------------------------------------------------------------------------


class InvarianceKind(_Part):
    unit: str
    amounts: list[float]
    relative: list[list[list[float]]]  # [L][B][A]: ||f(Tx) - f(x)|| / ||f(x)||
    true_prob: list[list[float]]  # [B][A]


class InvarianceDoc(AnalysisDoc):
    """Translation / rotation / scale sweeps (Zeiler & Fergus 2013, Fig. 5)."""

    KIND: ClassVar[str] = "invariance"
    layers: list[str]
    images: list[int]
    labels: list[int]
    kinds: dict[str, InvarianceKind]

    def probe_images(self) -> list[int]:
        return list(self.images)


# --- smoothgrad.json --------------------------------------------------------------------------------


class SmoothGradImage(_Part):
    index: int
    label: int  # the differentiated class
    predicted: int
    smooth_png: RelPath  # viridis of max_c |SmoothGrad|, scaled by its 99th percentile
    plain_png: RelPath  # the same for the plain gradient
    smooth_scale: float  # that percentile (0: an all-zero map)
    plain_scale: float


class SmoothGradDoc(AnalysisDoc):
    """SmoothGrad (Smilkov et al. 2017) beside the plain gradient, for a few probe images."""

    KIND: ClassVar[str] = "smoothgrad"
    samples: int
    noise: float  # sigma as a share of each image's max - min
    images: list[SmoothGradImage]

    def probe_images(self) -> list[int]:
        return [e.index for e in self.images]
