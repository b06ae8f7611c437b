"""Typed store documents of the analyses: one pydantic model per kind, one ``FORMAT`` (issue 12).

``networks/<net>/<ckpt>/<kind>.json`` is written from these models by
:meth:`sitegen.store.Store.write_analysis` and read back, validated once, by
:meth:`sitegen.store.Store.read_analysis`; render and the test fixture use the same types, so a
field is named in one place. File paths inside a document are relative to the checkpoint folder
and checked here (no ``..``, not absolute). Torch-free, like the rest of the store.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

#: Format of every analysis document (bumped when a reader could misread an older one).
FORMAT: Literal[1] = 1


def _inside(rel: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        raise ValueError(f"file {rel!r} leaves the checkpoint folder")
    return rel


#: A file of the checkpoint folder, relative to it.
RelPath = Annotated[str, AfterValidator(_inside)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnalysisDoc(_Part):
    """Base of every analysis document: its ``format`` and what it references."""

    KIND: ClassVar[str] = ""
    format: Literal[1] = FORMAT

    def probe_images(self) -> list[int]:
        """Probe images the document's pages show (the build writes them under ``datasets/``)."""
        return []


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


# --- stroke.json ------------------------------------------------------------------------------------


class StrokeDoc(AnalysisDoc):
    """Per-class stroke density / complexity (None: no probe image) and Spearman rho per layer."""

    KIND: ClassVar[str] = "stroke"
    kind: Literal["sketch", "photo"]
    density: list[float | None]
    complexity: list[float | None]
    n: list[int]
    rho_density: dict[str, float | None]
    rho_complexity: dict[str, float | None]
    rho_overall: float | None  # against the overall (all layers) preference


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


# --- similar.json (issue 15, item 6) -----------------------------------------------------------------


class SimilarPeer(_Part):
    """A unit correlated with a shown unit: its index, Pearson r and its rank-1 probe image."""

    unit: int
    r: float
    image: int  # its rank-1 probe image (-1: none), for the thumbnail


class SimilarUnit(_Part):
    same: list[SimilarPeer]  # the same layer, highest r first (itself left out)
    next: list[SimilarPeer]  # the next layer of the layer table (empty for the last layer)


class SimilarLayer(_Part):
    next: str | None  # the next layer's name (None: the last layer)
    constant: list[int]  # units with one value on every probe image (e.g. dead): r undefined
    next_constant: int  # how many of the next layer's units are constant (never listed)
    units: dict[str, SimilarUnit]  # shown units with a defined r, keyed by index as a string


class SimilarDoc(AnalysisDoc):
    """Most correlated units (Pearson over the probe images of per-image maxima) of each shown unit."""

    KIND: ClassVar[str] = "similar"
    k: int
    images: int  # probe images N the correlations run over
    layers: dict[str, SimilarLayer]

    def probe_images(self) -> list[int]:
        return sorted(
            {
                p.image
                for lay in self.layers.values()
                for e in lay.units.values()
                for p in (*e.same, *e.next)
                if p.image >= 0
            }
        )


# --- store/compare/<dataset>/cka.json (issue 15, item 6) -----------------------------------------------


class CkaPair(_Part):
    """Linear CKA between every layer of side ``a`` (rows) and of side ``b`` (columns)."""

    a: str  # "net@checkpoint"
    b: str
    layers_a: list[str]
    layers_b: list[str]
    cka: list[list[float | None]]  # [len(layers_a)][len(layers_b)], None: undefined (constant layer)

    @model_validator(mode="after")
    def _shape(self) -> CkaPair:
        if len(self.cka) != len(self.layers_a) or any(len(r) != len(self.layers_b) for r in self.cka):
            raise ValueError("cka is not len(layers_a) x len(layers_b)")
        return self


class CkaDoc(AnalysisDoc):
    """Linear CKA (Kornblith et al. 2019) between the networks of one dataset, on its probe set; the
    features of a layer are its units' per-image maxima (spatially max-pooled maps). Not a registered
    kind: the build writes it per dataset once every network's entry exists."""

    KIND: ClassVar[str] = "cka"
    dataset: str
    images: int
    keys: dict[str, str]  # "net@checkpoint" -> its entry's cache key (the doc is reused while they hold)
    pairs: list[CkaPair]


# --- classes.json (issue 15: class pages) ------------------------------------------------------------


class ClassRanking(_Part):
    """Per class (by index): the best units of one layer, best first, their values, and how many
    units qualify at all (the lists keep at most ``ClassesDoc.units``)."""

    units: list[list[int]]
    values: list[list[float]]
    count: list[int]

    @model_validator(mode="after")
    def _same_length(self) -> ClassRanking:
        if len(self.units) != len(self.values) or len(self.units) != len(self.count):
            raise ValueError("units, values and count differ in length")
        if any(len(u) != len(v) for u, v in zip(self.units, self.values, strict=True)):
            raise ValueError("a class's units and values differ in length")
        return self


class ClassesLayer(_Part):
    shown: int  # units with pages (the ones ranked)
    share: ClassRanking  # rank-weighted share of the class among the unit's top-k images
    selectivity: ClassRanking | None  # units whose top class it is, by Morcos et al. 2018; None: undefined


class ClassesDoc(AnalysisDoc):
    """Per class and layer, the shown units that prefer the class most (issue 15, item 4)."""

    KIND: ClassVar[str] = "classes"
    units: int  # kept per class, layer and ranking
    top_k: int
    activations: bool  # whether per-image activations were there (selectivity needs them)
    layers: dict[str, ClassesLayer]


# --- effect.json ------------------------------------------------------------------------------------


def _rows(n: int, **lists: list) -> None:
    for name, v in lists.items():
        if len(v) != n:
            raise ValueError(f"{name} has {len(v)} entries, not {n}")


class DirectEffect(_Part):
    """Per unit (all units, by index) of the layer feeding the classifier: the head's weights."""

    layer: str  # the layer whose output is the classifier's input
    head: str  # module path of the classifier (the last nn.Linear)
    pooling: Literal["none", "mean", "max"]  # layer output -> head input (global pool of a conv layer)
    mean: list[float]  # [U] mean of the unit's head input over mean_images probe images
    mean_images: int
    mean_source: Literal["activations", "forward"]  # activations.npy, or a forward over the subset
    top: list[list[int]]  # [U][n] classes with the largest weight W[c, j], largest first
    top_w: list[list[float]]
    bottom: list[list[int]]  # [U][n] the smallest weights, smallest first
    bottom_w: list[list[float]]
    contribution: list[float]  # [U] max_c W[c, j] * mean[j]: its largest mean logit contribution

    @model_validator(mode="after")
    def _same_length(self) -> DirectEffect:
        n = len(self.mean)
        _rows(n, top=self.top, top_w=self.top_w, bottom=self.bottom, bottom_w=self.bottom_w)
        _rows(n, contribution=self.contribution)
        for a, b in ((self.top, self.top_w), (self.bottom, self.bottom_w)):
            if any(len(x) != len(y) for x, y in zip(a, b, strict=True)):
                raise ValueError("a unit's classes and weights differ in length")
        return self


class AblationLayer(_Part):
    """Per ablated unit of one layer (parallel lists over ``units``), on ``images`` probe images."""

    units: list[int]
    images: int
    base_accuracy: float  # the intact network on those images
    base_logit: float  # its mean true-class logit
    accuracy: list[float]  # [U] with the unit zeroed
    logit_drop: list[float]  # [U] mean over images of (intact - ablated) true-class logit
    classes: list[list[int]]  # [U][n] classes whose mean true-class logit drops most, most first
    drops: list[list[float]]  # [U][n] those mean drops
    class_accuracy: list[list[float]]  # [U][n] their accuracy change (ablated - intact)
    class_images: list[int]  # [C] images of each class among the probe images

    @model_validator(mode="after")
    def _same_length(self) -> AblationLayer:
        n = len(self.units)
        _rows(n, accuracy=self.accuracy, logit_drop=self.logit_drop, classes=self.classes)
        _rows(n, drops=self.drops, class_accuracy=self.class_accuracy)
        return self


class EffectDoc(AnalysisDoc):
    """What a unit does to the prediction (issue 15, item 5): direct logit effects and ablations."""

    KIND: ClassVar[str] = "effect"
    classes: int  # top / bottom classes kept per unit
    direct: DirectEffect | None  # None: the classifier's input is no layer of the table
    ablation: dict[str, AblationLayer]


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

__all__ = [
    "FORMAT",
    "CkaDoc",
    "CkaPair",
    "SimilarDoc",
    "SimilarLayer",
    "SimilarPeer",
    "SimilarUnit",
    "ClassRanking",
    "ClassesDoc",
    "ClassesLayer",
    "DistributionDoc",
    "DistributionLayer",
    "DistributionUnit",
    "AnalysisDoc",
    "EffectDoc",
    "EmbeddingDoc",
    "ErfDoc",
    "ErfUnit",
    "FeatVisDoc",
    "FeatVisLayer",
    "GradCamDoc",
    "GradCamImage",
    "InvarianceDoc",
    "InvarianceKind",
    "MasksDoc",
    "MasksLayer",
    "OcclusionDoc",
    "OcclusionImage",
    "RelPath",
    "SmoothGradDoc",
    "SmoothGradImage",
    "StrokeDoc",
]
