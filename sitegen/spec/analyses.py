"""The ``analyses:`` section: one params model per technique, gathered in :class:`AnalysesSpec`.

Each model is the ``Params`` of its analysis module (``sitegen.analyses.<name>``), kept here so the
spec loads without torch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from sitegen.spec._base import _Model


class ReconstructionSpec(_Model):
    """Deconvnet / guided-backprop reconstructions of each unit's top-k patches."""

    enabled: bool = Field(True, description="Compute reconstructions.")
    methods: list[Literal["deconvnet", "guided", "gradient"]] = Field(
        ["deconvnet"], min_length=1, description="Methods to compute; the first is shown beside the patches."
    )
    batch_size: int = Field(64, gt=0, description="(unit, image) pairs per backward pass.")
    cell: int = Field(
        96,
        ge=16,
        le=256,
        description="Largest side in px of a unit sprite's cells (patches and reconstructions; a smaller "
        "receptive field keeps its own size). The sprites are most of a `units: all` site: 64 px makes "
        "them about a third the bytes of 96 px (alexnet at 224 px), at the cost of detail on a projector.",
    )


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
