"""Documents of layer and unit pages about each unit on its own.

Feature visualizations, empirical receptive fields, activation distributions and unit scores, and
the exemplar masks (NetDissect).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from sitegen.store.formats.base import AnalysisDoc, RelPath, _Part

__all__ = [
    "DistributionDoc",
    "DistributionLayer",
    "DistributionUnit",
    "ErfDoc",
    "ErfUnit",
    "FeatVisDoc",
    "FeatVisLayer",
    "MasksDoc",
    "MasksLayer",
]


# --- featvis.json -----------------------------------------------------------------------------------


class FeatVisLayer(_Part):
    units: list[int]
    objective: list[float]
    start_objective: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> FeatVisLayer:
        if not len(self.units) == len(self.objective) == len(self.start_objective):
            raise ValueError("units, objective and start_objective differ in length")
        return self


class FeatVisDoc(AnalysisDoc):
    """One optimized image per unit: ``featvis/<layer>/unit-0007.webp``."""

    KIND: ClassVar[str] = "featvis"
    size: int
    seed: int
    steps: int
    lr: float
    param: str
    decorrelate: bool
    grayscale: bool
    transforms: bool
    tv: float
    l2: float
    layers: dict[str, FeatVisLayer]

    @staticmethod
    def image(layer: str, unit: int) -> str:
        """The WebP of one unit, relative to the checkpoint folder."""
        return f"featvis/{layer}/unit-{unit:04d}.webp"


# --- erf.json ---------------------------------------------------------------------------------------


class ErfUnit(_Part):
    png: RelPath  # viridis, map_size px square, centred on the analytic RF
    map_size: int
    analytic_size: int
    effective_size: float
    centroid: list[float]
    mass: float
    images: int
    peak: float


class ErfDoc(AnalysisDoc):
    """Empirical receptive fields (Zhou et al. 2015): layer -> unit (as a string) -> map."""

    KIND: ClassVar[str] = "erf"
    occluder: int
    stride: int
    layers: dict[str, dict[str, ErfUnit]]


# --- distribution.json ------------------------------------------------------------------------------


class DistributionUnit(_Part):
    """One shown unit: its histogram and its interval samples."""

    lo: float  # left edge of the first bin
    hi: float  # right edge of the last bin
    counts: list[int]  # images per bin (equal width)
    samples: list[list[int]]  # per interval (lowest first): probe images
    values: list[list[float]]  # their per-image maxima
    bounds: list[list[float]]  # per interval: [lowest, highest] value of its images

    @model_validator(mode="after")
    def _same_length(self) -> DistributionUnit:
        if len(self.samples) != len(self.values) or len(self.samples) != len(self.bounds):
            raise ValueError("samples, values and bounds differ in length")
        if any(len(a) != len(b) for a, b in zip(self.samples, self.values, strict=True)):
            raise ValueError("an interval's samples and values differ in length")
        return self


class DistributionLayer(_Part):
    """Per unit of the layer (all units, by index): the scores; per shown unit its histogram."""

    rectified: bool  # every value >= 0 (post-ReLU or prob): density and selectivity are defined
    density: list[float] | None  # share of images with max > threshold; None: not rectified / prob
    mean: list[float]
    max: list[float]
    selectivity: list[float] | None  # Morcos et al. 2018 over class means; None: not rectified
    entropy: list[float]  # bits, of the classes of the unit's top-k images
    units: dict[str, DistributionUnit]  # shown units, keyed by index as a string

    @model_validator(mode="after")
    def _same_length(self) -> DistributionLayer:
        n = len(self.mean)
        others = (self.density, self.max, self.selectivity, self.entropy)
        if any(v is not None and len(v) != n for v in others):
            raise ValueError("density, mean, max, selectivity and entropy differ in length")
        return self


class DistributionDoc(AnalysisDoc):
    """Activation distributions and unit scores from ``activations.npy`` (issue 15, items 2 and 3)."""

    KIND: ClassVar[str] = "distribution"
    images: int  # probe images N
    bins: int
    intervals: int
    per_interval: int
    threshold: float
    rare: float
    layers: dict[str, DistributionLayer]
    thumbs: dict[str, RelPath]  # probe index (string) -> thumbnail, for the interval samples

    def probe_images(self) -> list[int]:
        return sorted(int(i) for i in self.thumbs)


# --- masks.json -------------------------------------------------------------------------------------


class MasksLayer(_Part):
    """One conv layer: its shown units (rows of the arrays in ``masks.npz``) and its map geometry."""

    units: list[int]
    grid: list[int]  # [rows, cols] of the layer's map
    rf_size: int  # receptive field of position (0, 0): centre row = rf_offset + row * rf_stride (px)
    rf_stride: int
    rf_offset: float


class MasksDoc(AnalysisDoc):
    """Exemplar evidence (NetDissect, Bau et al. 2017): per shown conv unit its activation map on each
    top-k image and its threshold (the ``quantile`` of its activations over the positions of ``sample``
    probe images). Arrays in ``file`` (per layer: ``<layer>/maps`` float16 ``[S, k, rows, cols]``,
    ``<layer>/images`` int64 ``[S, k]`` (-1: empty slot), ``<layer>/threshold`` float16 ``[S]``,
    ``<layer>/boxes`` int32 ``[S, k, 4]``: the unclipped RF box of each patch)."""

    KIND: ClassVar[str] = "masks"
    quantile: float
    sample: int  # probe images whose positions gave the thresholds
    probe: int  # probe images in all (the sample is evenly spaced over them)
    input_size: int
    file: RelPath
    layers: dict[str, MasksLayer]
