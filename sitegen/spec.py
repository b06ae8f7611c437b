"""The experiment spec: one pydantic tree loaded from YAML.

``load_spec(path)`` parses the YAML once, keeps every node's line so that each
problem is reported as ``experiments.yaml:12: networks.alexnet.arch: ...``, and
reports ALL problems at once (structure, cross references, missing files) in
one :class:`~sitegen.errors.SpecError`. Checks that need torch (architecture
names) live with the models stage and reuse :meth:`Spec.where` to point at the
line.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from sitegen.errors import SpecError

ArchCheck = Callable[[str], "str | None"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_HELP = "letters, digits, '_', '.', '-' (it becomes part of URLs and file names)"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- small value types -------------------------------------------------------------------------------


def _classes(v: Any) -> Any:
    if v == "all" or isinstance(v, list) or (isinstance(v, dict) and set(v) == {"top"}):
        return v
    raise ValueError(f"expected 'all', a list of class names, or {{top: N}}; got {v!r}")


def _normalization(v: Any) -> Any:
    if v in ("auto", "imagenet", "dataset", "none") or (isinstance(v, dict) and set(v) <= {"mean", "std"}):
        return v
    raise ValueError(
        "expected one of ['auto', 'imagenet', 'dataset', 'none'] or {mean: [r, g, b], std: [r, g, b]}; "
        f"got {v!r}"
    )


def _layers(v: Any) -> Any:
    if v == "auto" or (isinstance(v, list) and v):
        return v
    raise ValueError(f"expected 'auto' or a non-empty list of layer names or module paths; got {v!r}")


def _units(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _unit_choice(x) for k, x in v.items()}
    return _unit_choice(v)


def _unit_choice(v: Any) -> Any:
    if v == "all" or (isinstance(v, int) and not isinstance(v, bool)) or isinstance(v, list):
        if isinstance(v, int) and v <= 0:
            raise ValueError(f"a number of units must be > 0, got {v}")
        if isinstance(v, list) and any(not isinstance(u, int) or isinstance(u, bool) or u < 0 for u in v):
            raise ValueError(f"unit indices must be integers >= 0, got {v!r}")
        return v
    raise ValueError(
        f"expected 'all', a number of units, a list of unit indices, or a mapping layer: choice; got {v!r}"
    )


UnitChoice = Literal["all"] | int | list[int]


def _checkpoints(v: Any) -> Any:
    if isinstance(v, dict):
        return v
    if isinstance(v, list):  # a list of paths: names are the file stems
        return {Path(str(p)).stem: p for p in v}
    raise ValueError(f"expected a mapping name: path (or a list of paths); got {v!r}")


class TopClasses(_Model):
    """Keep the N classes with the most images (ties broken by name)."""

    top: int = Field(gt=0, description="How many classes to keep, those with the most images.")


class MeanStd(_Model):
    """Explicit per-channel normalization."""

    mean: tuple[float, float, float] = Field(description="Per-channel (R, G, B) mean, images scaled to 0..1.")
    std: tuple[float, float, float] = Field(description="Per-channel (R, G, B) standard deviation.")

    @model_validator(mode="after")
    def _positive_std(self) -> MeanStd:
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be > 0 in every channel, got {list(self.std)}")
        return self


Normalization = Annotated[
    Literal["auto", "imagenet", "dataset", "none"] | MeanStd, BeforeValidator(_normalization)
]


# --- sections ----------------------------------------------------------------------------------------


class DatasetSpec(_Model):
    """One dataset: the built-in doodles, an ImageFolder tree, or separate train/probe trees."""

    builtin: Literal["doodles"] | None = Field(
        None,
        description="A dataset sitegen draws itself: 'doodles' (procedural line sketches, deterministic).",
    )
    path: Path | None = Field(
        None, description="ImageFolder root: one sub-folder per class; split into train/probe by seed."
    )
    train_path: Path | None = Field(
        None, description="ImageFolder root of the training split (with probe_path)."
    )
    probe_path: Path | None = Field(
        None, description="ImageFolder root of the probe split: the images the atlas mines and shows."
    )
    classes: Annotated[Literal["all"] | list[str] | TopClasses, BeforeValidator(_classes)] = Field(
        "all", description="'all', a list of class names, or {top: N}: the N classes with the most images."
    )
    max_per_class: int | None = Field(None, gt=0, description="At most this many images per class and split.")
    images_per_class: int = Field(
        48, gt=0, description="builtin only: how many images to draw per class (before the split)."
    )
    probe_fraction: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Share of each class held out as the probe split (builtin and path: datasets).",
    )
    image_size: int = Field(
        64,
        gt=0,
        description="Images are resized (shorter side) and centre-cropped to this square size in px.",
    )
    grayscale: bool | None = Field(
        None,
        description="Grey images (sketches): first-layer filters and reconstructions are drawn in grey, "
        "summed over the identical input channels. Default: detected (R = G = B on the probe images).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        sources = [self.builtin is not None, self.path is not None, self.train_path or self.probe_path]
        if sum(bool(s) for s in sources) != 1:
            raise ValueError("give exactly one of 'builtin', 'path', or 'train_path' + 'probe_path'")
        if bool(self.train_path) != bool(self.probe_path):
            raise ValueError("'train_path' and 'probe_path' go together")
        if self.builtin and self.classes != "all" and not isinstance(self.classes, TopClasses):
            from sitegen.doodles import CLASSES  # pure python, no torch

            unknown = [c for c in self.classes if c not in CLASSES]
            if unknown:
                raise ValueError(f"unknown doodles classes {unknown}; known: {list(CLASSES)}")
        return self


class TrainSpec(_Model):
    """Demo training: a checkpoint per epoch (epoch-1 … epoch-N) and the probe accuracy of each."""

    epochs: int = Field(4, gt=0, description="Number of epochs; one checkpoint is saved after each.")
    batch_size: int = Field(32, gt=0, description="Training batch size.")
    lr: float = Field(0.01, gt=0, description="Learning rate.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field(
        "sgd", description="Optimizer: sgd (momentum), adam, adamw."
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay.")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="Learning-rate schedule over all steps: cosine decay to 0, or constant."
    )
    augment: bool = Field(True, description="Random horizontal flips and small shifts while training.")


class NetworkSpec(_Model):
    """One network: an architecture, where its weights come from, and which layers to map."""

    arch: str = Field(
        description="'zoo:<name>' (built-in small nets), 'torchvision:<name>' (or a bare torchvision name), "
        "or 'package.module:callable' returning an nn.Module (called with num_classes=...)."
    )
    dataset: str = Field(description="Key of the dataset (under datasets:) to probe and train on.")
    weights: str | None = Field(
        None,
        description="A torchvision weights name (e.g. IMAGENET1K_V1) or a path to a local checkpoint file.",
    )
    checkpoints: Annotated[dict[str, Path], BeforeValidator(_checkpoints)] = Field(
        default_factory=dict,
        description="Named local checkpoints, in order (e.g. {early: a.pt, late: b.pt}).",
    )
    normalization: Normalization = Field(
        "auto",
        description="'imagenet', 'dataset' (mean/std of the train split), 'none', {mean, std}, or 'auto' "
        "(the torchvision weights' own for weights names, else 'dataset').",
    )
    layers: Annotated[Literal["auto"] | list[str], BeforeValidator(_layers)] = Field(
        "auto",
        description="'auto' (each conv block after its ReLU, each fc layer, and prob) or a list of friendly "
        "names / module paths.",
    )
    units: Annotated[UnitChoice | dict[str, UnitChoice], BeforeValidator(_units)] = Field(
        "all",
        description="Units with pages, per layer: 'all', a count (sampled deterministically), a list of "
        "indices, or a mapping {layer: choice} (unlisted layers: all). Mining always covers every unit.",
    )
    atlas: Literal["last", "all"] | list[str] = Field(
        "last", description="Checkpoints that get full atlas pages: 'last', 'all', or a list of names."
    )
    evolution: bool | list[str] = Field(
        False,
        description="Also mine and reconstruct these checkpoints (true: every one) for the feature-evolution "
        "pages (Zeiler & Fergus Fig. 4), e.g. [epoch-1, epoch-2, epoch-4, epoch-8, epoch-12].",
    )
    train: TrainSpec | None = Field(
        None, description="Train this network on its dataset (demo; CPU-friendly)."
    )


class ReconstructionSpec(_Model):
    """Deconvnet / guided-backprop reconstructions of each unit's top-k patches."""

    enabled: bool = Field(True, description="Compute reconstructions.")
    methods: list[Literal["deconvnet", "guided", "gradient"]] = Field(
        ["deconvnet"], min_length=1, description="Methods to compute; the first is shown beside the patches."
    )
    batch_size: int = Field(64, gt=0, description="(unit, image) pairs per backward pass.")


class FiltersSpec(_Model):
    """Filter-weight grids."""

    enabled: bool = Field(True, description="Draw the first conv layer's filters.")


class ActivationMapsSpec(_Model):
    """Top channels per layer for a few probe images, with the image's top-5 predictions."""

    enabled: bool = Field(True, description="Compute activation maps.")
    images: int = Field(4, ge=0, description="How many probe images (one per class, in class order).")
    channels: int = Field(3, gt=0, description="Top channels (by activation norm) shown per layer.")


def _layer_pick(v: Any) -> Any:
    if v in ("conv", "last") or (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
        return v
    raise ValueError(
        f"expected 'conv' (every conv layer), 'last' (the last conv layer) or a list of names; got {v!r}"
    )


LayerPick = Annotated[Literal["conv", "last"] | list[str], BeforeValidator(_layer_pick)]


class GradCamSpec(_Model):
    """Grad-CAM (Selvaraju et al. 2017) heat maps of a few probe images, true and predicted class."""

    enabled: bool = Field(True, description="Compute Grad-CAM maps (network page).")
    images: int = Field(8, ge=1, description="Probe images (one per class, in class order).")
    layer: str | None = Field(None, description="Layer (friendly name); default: the last conv/block layer.")


class OcclusionSpec(_Model):
    """Occlusion sensitivity (Zeiler & Fergus 2013, Fig. 7): a grey square slides over probe images."""

    enabled: bool = Field(True, description="Compute occlusion maps (network page).")
    images: int = Field(4, ge=1, description="Probe images (one per class, in class order).")
    size: int | None = Field(
        None,
        gt=0,
        description="Side of the grey square in input pixels (default: 1/8 of the input: 8 px at 64, 28 at "
        "224).",
    )
    stride: int | None = Field(
        None,
        gt=0,
        description="Pixels between square positions (default: half the square: 15 x 15 positions at any "
        "size).",
    )
    layer: str | None = Field(
        None, description="Layer whose strongest unit is followed; default: the last conv/block layer."
    )
    batch_size: int | None = Field(
        None,
        gt=0,
        description="Occluded copies per forward pass (default: 256 at 64 px, fewer for larger inputs at "
        "the same memory: 21 at 224 px).",
    )


class EmpiricalRFSpec(_Model):
    """Empirical receptive fields (Zhou et al. 2015): occlusion discrepancy of a unit's top images."""

    enabled: bool = Field(False, description="Compute empirical receptive fields (unit pages); costly.")
    layers: LayerPick = Field("conv", description="'conv', 'last' or a list of layer names.")
    units: int = Field(4, gt=0, description="Units per layer: the first N shown units.")
    images: int | None = Field(None, gt=0, description="Top images per unit (default: all top_k).")
    occluder: int | None = Field(
        None,
        gt=0,
        description="Side of the occluding square in input pixels (default: Zhou et al.'s 11 of 227, scaled "
        "to the input; at least 3).",
    )
    stride: int | None = Field(
        None,
        gt=0,
        description="Pixels between occluder positions (default: Zhou et al.'s 3 of 227, scaled; at least "
        "1).",
    )
    batch_size: int | None = Field(
        None,
        gt=0,
        description="Occluded copies per forward pass (default: 256 at 64 px, fewer for larger inputs at "
        "the same memory: 21 at 224 px).",
    )


class FeatVisSpec(_Model):
    """Feature visualization by optimization (Erhan 2009; Olah et al. 2017), batched over units."""

    enabled: bool = Field(False, description="Optimize one image per shown unit (unit and layer pages).")
    layers: LayerPick = Field("conv", description="'conv', 'last' or a list of layer names.")
    units: int | None = Field(
        None, gt=0, description="Units per layer: the first N shown units (default: all)."
    )
    size: int | None = Field(None, gt=0, description="Image side in pixels (default: the input size).")
    steps: int = Field(128, gt=0, description="Adam steps.")
    lr: float = Field(0.1, gt=0, description="Adam learning rate (parameter space).")
    param: Literal["fourier", "pixel"] = Field("fourier", description="Image parametrization.")
    decorrelate: bool = Field(True, description="Decorrelate colours (ImageNet colour correlation).")
    grayscale: bool = Field(False, description="Optimize one grey channel (networks trained on sketches).")
    transforms: bool = Field(True, description="Random jitter, scale and rotation each step.")
    tv: float = Field(0.0, ge=0, description="Total-variation penalty weight.")
    l2: float = Field(0.0, ge=0, description="L2-towards-grey penalty weight.")
    batch_units: int | None = Field(None, gt=0, description="Units per batch (default: sized to memory).")


class EmbeddingSpec(_Model):
    """2-D map of the probe set's penultimate-layer features (network page)."""

    enabled: bool = Field(True, description="Compute the embedding.")
    method: Literal["tsne", "pca", "umap"] = Field("tsne", description="umap needs umap-learn installed.")
    perplexity: float | None = Field(None, gt=0, description="t-SNE perplexity (default min(30, (N-1)/3)).")


class InvarianceSpec(_Model):
    """Translation / rotation / scale sweeps (Zeiler & Fergus 2013, Fig. 5)."""

    enabled: bool = Field(True, description="Compute invariance curves (network page).")
    images: int = Field(4, ge=1, description="Probe images (one per class, in class order).")
    layers: list[str] | None = Field(
        None, description="Layers compared (default: the first layer and the top one, as Z&F's 1 and 7)."
    )
    translations: list[float] | None = Field(
        None, description="Vertical shifts in px (default: up to a quarter of the image, 17 steps)."
    )
    rotations: list[float] = Field(
        [float(a) for a in range(0, 360, 15)], description="Angles in degrees, counter-clockwise."
    )
    scales: list[float] = Field(
        [0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4], description="Zoom factors (1 = unchanged)."
    )


class StrokeSpec(_Model):
    """Stroke density and complexity per class vs each layer's class preference (Spearman)."""

    enabled: bool = Field(True, description="Compute per-class density and its correlation per layer.")
    kind: Literal["auto", "sketch", "photo"] = Field(
        "auto", description="sketch: density = ink share; photo: edge share; auto: guess from the images."
    )
    ink_threshold: float = Field(64.0, gt=0, description="Grey levels (of 255) from the background = ink.")
    edge_threshold: float = Field(0.25, gt=0, description="Sobel magnitude (black-to-white = 1) = edge.")


class SmoothGradSpec(_Model):
    """SmoothGrad (Smilkov et al. 2017): input gradients of the true class averaged over noisy copies."""

    enabled: bool = Field(False, description="Compute SmoothGrad saliency maps (network page).")
    images: int = Field(4, ge=1, description="Probe images (one per class, in class order).")
    samples: int = Field(16, ge=1, description="Noisy copies per image (the paper's n; 50 in its figures).")
    noise: float = Field(
        0.15,
        ge=0,
        description="Noise sigma as a share of the image's value range (max - min); 0: the plain gradient.",
    )
    batch_size: int = Field(64, gt=0, description="Noisy copies per forward/backward pass.")


class ActivationsSpec(_Model):
    """Per-image activations (issue 15): every unit's maximum on every probe image, kept in the store."""

    enabled: bool = Field(
        True,
        description="Write activations.npy (float16, probe images x all units, 2 bytes each) while "
        "mining; it feeds the activation distributions and unit scores.",
    )


class DistributionSpec(_Model):
    """Activation distributions and unit scores (issue 15), from the per-image activations: numpy only."""

    enabled: bool = Field(
        True, description="Histograms, density, interval samples and sortable scores on layer and unit pages."
    )
    bins: int = Field(
        30,
        ge=2,
        le=200,
        description="Histogram bins (equal width, from min(0, lowest) to the highest value).",
    )
    intervals: int = Field(
        5, ge=1, le=20, description="Equal-count (quantile) intervals of the images the unit fires on."
    )
    per_interval: int = Field(3, ge=1, le=10, description="Images sampled from each interval.")
    threshold: float = Field(
        0.0,
        description="A unit 'fires' on an image when its maximum exceeds this (density); 0 suits post-ReLU "
        "layers. Linear (pre-activation) and prob layers get no density.",
    )
    rare: float = Field(
        0.01, ge=0, le=1, description="Layer pages flag units with density below this as rarely firing."
    )


class SimilarSpec(_Model):
    """Similar units (issue 15): Pearson correlation over the probe images of the per-image maxima."""

    enabled: bool = Field(
        True,
        description="List on each unit page its most correlated units in the same and the next layer "
        "(numpy: standardized float32 block products; ~1 s at seed scale).",
    )
    k: int = Field(6, ge=1, le=50, description="Similar units kept per shown unit and layer.")


class ClassesSpec(_Model):
    """Class pages (issue 15): per class, the units that prefer it most in each layer; numpy only."""

    enabled: bool = Field(
        True,
        description="Rank each layer's shown units per class by rank-weighted top-k share and by class "
        "selectivity (from the per-image activations), for the class pages.",
    )
    units: int = Field(
        12, ge=1, le=100, description="Units kept per class, per layer and per ranking (the class "
        "pages list the best 12 over all layers and networks, and the best 3 of each layer)."
    )


class AblationSpec(_Model):
    """Ablation (Bau et al. 2020, PNAS): zero one unit at a time, rerun the network from its layer on."""

    enabled: bool = Field(
        False,
        description="Ablate each shown unit of the chosen layers (unit pages); opt-in. Cost: units x "
        "images forwards of the network from the layer on (the part before it runs once per image), "
        "batch_size rows per forward: the default atlas's last conv layer (64 units x 256 images) takes "
        "~1.5 CPU-seconds a network; AlexNet's conv5 at 224 px (256 units x 256 images: 65,536 "
        "forwards of pool-fc6-fc7-fc8, ~7 TFLOP) ~160 CPU-seconds there (2.4 ms a row), seconds on a GPU.",
    )
    layers: LayerPick = Field(
        "last",
        description="'last' (the last conv layer), 'conv' (every conv layer: costly) or a list of "
        "layer names.",
    )
    images: int = Field(
        256,
        ge=1,
        description="Probe images (one per class in class order, then the second of each...); also "
        "what the mean activation of a pooled classifier input is averaged over.",
    )
    batch_size: int | None = Field(
        None,
        gt=0,
        description="Rows (ablated unit x image) per forward of the network's remainder (default: as "
        "many as 64 MB of the layer's output holds, 64 to 4,096: alexnet_small conv5 4,096, AlexNet "
        "conv5 at 224 px 387).",
    )


class EffectSpec(_Model):
    """What a unit does to the prediction (issue 15, item 5): direct logit effects and ablations."""

    enabled: bool = Field(
        True,
        description="Direct effect on each class logit (the classifier's weights) of every unit of "
        "the layer feeding the classifier; ablation effects of the shown units of other layers.",
    )
    classes: int = Field(5, ge=1, le=20, description="Top and bottom classes kept per unit.")
    ablation: AblationSpec = Field(
        default_factory=AblationSpec, description="Zero one unit, measure the true-class logit and accuracy."
    )


class MasksSpec(_Model):
    """Exemplar evidence (issue 15, item 7; NetDissect, Bau et al. 2017): each conv unit's activation
    map on each of its top-k images, outlined where it exceeds the unit's top-quantile threshold."""

    enabled: bool = Field(
        True,
        description="Store each shown conv unit's map on its top-k images (float16, layer resolution) and "
        "its threshold; unit pages outline where the map exceeds it. Cost: one forward, truncated at the "
        "last chosen layer, over the distinct top-k images and the sample.",
    )
    layers: LayerPick = Field("conv", description="'conv', 'last' or a list of layer names.")
    quantile: float = Field(
        0.995,
        gt=0,
        lt=1,
        description="Threshold T_k = this quantile of the unit's activations over all spatial positions of "
        "the sample images (NetDissect: 0.995, the top 0.5 %).",
    )
    sample: int = Field(
        256,
        ge=1,
        description="Probe images whose positions give the threshold: evenly spaced over the probe split "
        "(all of them when it is smaller).",
    )
    batch_size: int = Field(32, gt=0, description="Images per forward pass.")


class AnalysesSpec(_Model):
    """What to compute for every atlas checkpoint."""

    top_k: int = Field(9, gt=0, le=64, description="Images kept per unit (the literature uses 9).")
    batch_size: int = Field(64, gt=0, description="Probe images per forward batch while mining.")
    num_workers: int = Field(
        0, ge=0, description="DataLoader worker processes (0: load in the main process)."
    )
    autocast: bool = Field(False, description="Mine under torch.autocast on CUDA (faster, bf16/fp16 values).")
    activations: ActivationsSpec = Field(
        default_factory=ActivationsSpec, description="Per-image activations of every unit (activations.npy)."
    )
    reconstructions: ReconstructionSpec = Field(
        default_factory=ReconstructionSpec, description="Reconstructions."
    )
    filters: FiltersSpec = Field(default_factory=FiltersSpec, description="Filter-weight grids.")
    activation_maps: ActivationMapsSpec = Field(
        default_factory=ActivationMapsSpec, description="Activation maps of a few probe images."
    )
    gradcam: GradCamSpec = Field(default_factory=GradCamSpec, description="Grad-CAM / CAM heat maps.")
    occlusion: OcclusionSpec = Field(default_factory=OcclusionSpec, description="Occlusion sensitivity.")
    empirical_rf: EmpiricalRFSpec = Field(
        default_factory=EmpiricalRFSpec, description="Empirical receptive fields."
    )
    featvis: FeatVisSpec = Field(default_factory=FeatVisSpec, description="Feature visualization.")
    embedding: EmbeddingSpec = Field(default_factory=EmbeddingSpec, description="t-SNE / PCA embedding.")
    invariance: InvarianceSpec = Field(default_factory=InvarianceSpec, description="Invariance curves.")
    stroke: StrokeSpec = Field(default_factory=StrokeSpec, description="Stroke density vs class preference.")
    distribution: DistributionSpec = Field(
        default_factory=DistributionSpec, description="Activation distributions and unit scores."
    )
    similar: SimilarSpec = Field(
        default_factory=SimilarSpec, description="Most correlated units in the same and the next layer."
    )
    smoothgrad: SmoothGradSpec = Field(
        default_factory=SmoothGradSpec, description="SmoothGrad saliency maps."
    )
    masks: MasksSpec = Field(
        default_factory=MasksSpec, description="Activation outlines on the top-k images (NetDissect)."
    )
    effect: EffectSpec = Field(
        default_factory=EffectSpec, description="What a unit does: direct logit effects and ablations."
    )
    classes: ClassesSpec = Field(
        default_factory=ClassesSpec, description="Per-class unit rankings for the class pages."
    )


class DiffSpec(_Model):
    """Compare two checkpoints: 'NETWORK@CHECKPOINT' refs."""

    a: str = Field(description="Older side, e.g. 'alexnet@epoch-1'.")
    b: str = Field(description="Newer side, e.g. 'alexnet@epoch-4'.")


class PublishSpec(_Model):
    """Where `sitegen publish` pushes the site (GitHub Pages via ghp-import)."""

    remote: str = Field("origin", description="Git remote to push to.")
    branch: str = Field("gh-pages", description="Branch that holds the site.")
    cname: str | None = Field(None, description="Custom domain written to CNAME.")
    message: str | None = Field(None, description="Commit message (version and spec hash are appended).")


class Spec(_Model):
    """A sitegen experiment: datasets, networks, analyses, diffs and publishing."""

    title: str = Field("sitegen atlas", description="Title shown on every page.")
    output: Path = Field(
        Path("output"), description="Output folder (store/ and site/), relative to the spec file."
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="'auto' (cuda, then mps, then cpu), or a device.",
    )
    seed: int = Field(0, description="Seed for splits, doodles, unit sampling and training.")
    datasets: dict[str, DatasetSpec] = Field(min_length=1, description="Datasets by name.")
    networks: dict[str, NetworkSpec] = Field(min_length=1, description="Networks by name.")
    analyses: AnalysesSpec = Field(default_factory=AnalysesSpec, description="Analysis options.")
    diffs: list[DiffSpec] = Field(default_factory=list, description="Checkpoint comparisons to build.")
    publish: PublishSpec = Field(default_factory=PublishSpec, description="GitHub Pages publishing.")

    _source: SpecSource | None = PrivateAttr(None)

    @property
    def source(self) -> SpecSource:
        """Where the spec came from (file, text, node lines)."""
        if self._source is None:
            return SpecSource(Path("<spec>"), "", {})
        return self._source

    def where(self, loc: Iterable[str | int]) -> str:
        """``file:line`` of the deepest YAML node on ``loc`` (e.g. ``("networks", "alexnet", "arch")``)."""
        return self.source.where(tuple(loc))

    def problem(self, loc: Iterable[str | int], message: str) -> str:
        """Format one problem as ``file:line: dotted.key: message``."""
        loc = tuple(loc)
        return f"{self.where(loc)}: {_dotted(loc)}: {message}"

    def section_hash(self, *loc: str | int) -> str:
        """Content hash of one section (e.g. ``section_hash("networks", "alexnet")``) for cache keys."""
        node: Any = self.model_dump(mode="json")
        for part in loc:
            node = node[part]
        return hashlib.sha256(json.dumps(node, sort_keys=True).encode()).hexdigest()[:16]

    def spec_hash(self) -> str:
        """Content hash of the whole validated spec."""
        return self.section_hash()


# --- loading -----------------------------------------------------------------------------------------


class SpecSource:
    """The YAML file a spec came from, with the line of every node (1-based)."""

    def __init__(self, path: Path, text: str, lines: dict[tuple, int]) -> None:
        self.path = path
        self.text = text
        self.lines = lines

    def where(self, loc: tuple) -> str:
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return f"{self.path.name}:{self.lines[loc[:n]]}"
        return f"{self.path.name}:1"


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _node_lines(
    node: yaml.Node, loc: tuple, lines: dict[tuple, int], problems: list[tuple[tuple, str]]
) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append((loc + (key,), f"duplicate key {key!r}"))
            seen.add(key)
            lines[loc + (key,)] = key_node.start_mark.line + 1
            _node_lines(value_node, loc + (key,), lines, problems)
            lines[loc + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, loc + (i,), lines, problems)


def _clean_loc(loc: tuple, data: Any, missing: bool) -> tuple:
    """Keep the parts of a pydantic error location that are keys of the data (drop union tags)."""
    out: list = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            out.append(part)
            node = node[part]
        elif last and missing:
            out.append(part)
        # else: a union branch tag such as "literal['all']" or "TopClasses": skip it
    return tuple(out)


def _message(err: dict) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if (
        err["type"] in ("literal_error", "enum")
        or "pattern" in err["type"]
        or err["type"].startswith(("greater_than", "less_than", "too_short", "too_long"))
    ):
        msg = f"{msg}, got {err.get('input')!r}"
    return msg


def _suggest_key(loc: tuple, model: type[BaseModel]) -> str:
    """'did you mean' for an unknown key, using the field names of the model at that place."""
    fields = _fields_at(model, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (allowed: {', '.join(fields)})" if fields else ""


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """Field names of the nested model reached by ``loc``, walking dict/list/union annotations."""
    tp: Any = model
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    found = _model_in(tp)
    return list(found.model_fields) if found else []


def _step(tp: Any, part: str | int) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(part))
        return field.annotation if field else None
    origin, args = get_origin(tp), get_args(tp)
    if origin is dict:
        return args[1]
    if origin is list:
        return args[0]
    for arg in args:  # unions, Annotated
        nxt = _step(arg, part)
        if nxt is not None:
            return nxt
    return None


def _model_in(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _model_in(arg)
        if found:
            return found
    return None


def format_validation_errors(exc: ValidationError, data: Any, source: SpecSource) -> list[str]:
    """One ``file:line: key: message`` line per problem, union branches collapsed."""
    rows: list[tuple[tuple, str]] = []
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]), data, err["type"] == "missing")
        msg = _message(dict(err))
        if err["type"] == "extra_forbidden":
            msg += _suggest_key(loc, Spec)
        rows.append((loc, msg))
    # a union reports one error per branch: keep the deepest locations, one message per location
    deepest = [r for r in rows if not any(o[0][: len(r[0])] == r[0] and len(o[0]) > len(r[0]) for o in rows)]
    seen: set[tuple] = set()
    out = []
    for loc, msg in deepest:
        if loc in seen:
            continue
        seen.add(loc)
        out.append(f"{source.where(loc)}: {_dotted(loc)}: {msg}")
    return out


def _cross_checks(data: dict, source: SpecSource, arch_check: ArchCheck | None) -> list[str]:
    """References between sections, files on disk and (optionally) arch names, on the raw data.

    Runs even when the structure has errors, so one run reports everything.
    """
    problems: list[str] = []

    def add(loc: tuple, message: str) -> None:
        problems.append(f"{source.where(loc)}: {_dotted(loc)}: {message}")

    datasets: dict[Any, Any] = data["datasets"] if isinstance(data.get("datasets"), dict) else {}
    networks: dict[Any, Any] = data["networks"] if isinstance(data.get("networks"), dict) else {}
    for kind, names in (("datasets", datasets), ("networks", networks)):
        for name in names:
            if not re.match(NAME_PATTERN, str(name)):
                add((kind, name), f"name {name!r} must use {NAME_HELP}")
    for name, ds in datasets.items():
        for key in ("path", "train_path", "probe_path"):
            p = ds.get(key) if isinstance(ds, dict) else None
            if isinstance(p, str) and not Path(p).is_dir():
                add(("datasets", name, key), f"folder not found: {p}")
    for name, net in networks.items():
        if not isinstance(net, dict):
            continue
        arch = net.get("arch")
        if isinstance(arch, str) and arch_check is not None:
            message = arch_check(arch)
            if message:
                add(("networks", name, "arch"), message)
        ds_name = net.get("dataset")
        if isinstance(ds_name, str) and ds_name not in datasets:
            add(
                ("networks", name, "dataset"),
                f"unknown dataset {ds_name!r}{_did_you_mean(ds_name, datasets)}",
            )
        weights = net.get("weights")
        if isinstance(weights, str) and _looks_like_path(weights) and not Path(weights).is_file():
            add(("networks", name, "weights"), f"checkpoint file not found: {weights}")
        checkpoints: dict[Any, Any] = net["checkpoints"] if isinstance(net.get("checkpoints"), dict) else {}
        for ck, path in checkpoints.items():
            if not re.match(NAME_PATTERN, str(ck)):
                add(("networks", name, "checkpoints", ck), f"name must use {NAME_HELP}")
            if isinstance(path, str) and not Path(path).is_file():
                add(("networks", name, "checkpoints", ck), f"checkpoint file not found: {path}")
        if net.get("train") is not None and (weights or checkpoints):
            add(("networks", name, "train"), "train: starts from random weights; drop weights/checkpoints")
    diffs: list[Any] = data["diffs"] if isinstance(data.get("diffs"), list) else []
    for i, d in enumerate(diffs):
        for side in ("a", "b"):
            ref = d.get(side) if isinstance(d, dict) else None
            if not isinstance(ref, str):
                continue
            net_name, sep, ck = ref.partition("@")
            if not sep or not ck:
                add(("diffs", i, side), f"expected 'NETWORK@CHECKPOINT', got {ref!r}")
            elif net_name not in networks:
                add(("diffs", i, side), f"unknown network {net_name!r}{_did_you_mean(net_name, networks)}")
    return problems


def _looks_like_path(weights: str) -> bool:
    return (
        "/" in weights or "\\" in weights or Path(weights).suffix in (".pt", ".pth", ".bin", ".ckpt", ".tar")
    )


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(options))}"


def _resolve_paths(data: dict, base: Path) -> None:
    """Make relative paths in the raw data relative to the spec file's folder (in place)."""

    def fix(v: Any) -> Any:
        return str((base / v).resolve()) if isinstance(v, str) and not Path(v).is_absolute() else v

    if isinstance(data.get("output"), str) or "output" not in data:
        data["output"] = fix(data.get("output", "output"))
    for ds in (data.get("datasets") or {}).values():
        if isinstance(ds, dict):
            for key in ("path", "train_path", "probe_path"):
                if key in ds:
                    ds[key] = fix(ds[key])
    for net in (data.get("networks") or {}).values():
        if not isinstance(net, dict):
            continue
        if isinstance(net.get("weights"), str) and _looks_like_path(net["weights"]):
            net["weights"] = fix(net["weights"])
        cks = net.get("checkpoints")
        if isinstance(cks, dict):
            net["checkpoints"] = {k: fix(v) for k, v in cks.items()}
        elif isinstance(cks, list):
            net["checkpoints"] = {Path(str(p)).stem: fix(p) for p in cks}


def parse_spec(
    text: str, path: Path = Path("experiments.yaml"), *, arch_check: ArchCheck | None = None
) -> Spec:
    """Validate spec text; relative paths are taken relative to ``path``'s folder.

    Raises:
        SpecError: with every problem found, each as ``file:line: key: message``.
    """
    name = path.name
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise SpecError([f"{where}: YAML syntax error: {e.problem or e}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{name}:1: (top level): expected a mapping with datasets: and networks:"])
    lines: dict[tuple, int] = {}
    dup: list[tuple[tuple, str]] = []
    _node_lines(node, (), lines, dup)
    source = SpecSource(path, text, lines)
    problems = [f"{source.where(loc)}: {_dotted(loc)}: {msg}" for loc, msg in dup]
    _resolve_paths(data, path.parent.resolve())
    spec = None
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        problems += format_validation_errors(e, data, source)
    problems += _cross_checks(data, source, arch_check)
    if problems:
        raise SpecError(_by_line(problems))
    assert spec is not None
    spec._source = source
    return spec


def _by_line(problems: list[str]) -> list[str]:
    """Problems in file order (stable), duplicates dropped."""

    def line(p: str) -> int:
        m = re.match(r"^[^:]*:(\d+)", p)
        return int(m.group(1)) if m else 0

    return sorted(dict.fromkeys(problems), key=line)


def load_spec(path: str | Path, *, arch_check: ArchCheck | None = None) -> Spec:
    """Load and validate an experiment spec.

    Args:
        path: the YAML file (relative paths inside it are relative to its folder).
        arch_check: optional ``arch -> error message or None`` (``sitegen.models.check_arch``): kept
            outside this module so that loading a spec never imports torch.

    Returns:
        The validated, frozen :class:`Spec`.

    Raises:
        SpecError: the file is missing or has problems (all of them listed).

    Example:
        >>> spec = load_spec("experiments.yaml")  # doctest: +SKIP
        >>> list(spec.networks)  # doctest: +SKIP
        ['alexnet', 'vgg']
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            [f"{path}: spec file not found (create one, or run in a folder holding experiments.yaml)"]
        )
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError([f"{path}: cannot read the spec: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SpecError(
            [f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}): save the spec as UTF-8"]
        ) from None
    make_importable(path.parent)
    return parse_spec(text, path, arch_check=arch_check)


def make_importable(folder: Path) -> None:
    """Put the spec's folder first on ``sys.path``, so ``arch: mynets:LeNet`` finds ``mynets.py`` beside it.

    As pytest (rootdir) and uvicorn / fastapi-cli (the working directory) do for the app they load:
    a lab keeps its model code next to its experiments, and needs no PYTHONPATH. Once per folder.
    """
    entry = str(folder.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()


def json_schema() -> dict:
    """The JSON Schema of the spec (``sitegen schema``)."""
    return Spec.model_json_schema()
