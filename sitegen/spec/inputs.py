"""What an atlas is built from: the dataset, network and training sections, with their value types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from sitegen.spec._base import _Model

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
