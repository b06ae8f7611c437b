"""Documents of units and classes: class rankings, effects on the prediction, stroke statistics.

The class pages' rankings (issue 15, item 4), direct logit effects and ablations (issue 15, item 5),
and per-class stroke density / complexity against the layers' class preferences.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

from sitegen.store.formats.base import AnalysisDoc, _Part

__all__ = [
    "AblationLayer",
    "ClassRanking",
    "ClassesDoc",
    "ClassesLayer",
    "DirectEffect",
    "EffectDoc",
    "StrokeDoc",
]


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
