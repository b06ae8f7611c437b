"""What a unit does to the prediction (issue 15, item 5): direct logit effects and ablations.

**Direct effect** (the layer feeding the classifier). The classifier is the network's last
``nn.Linear``, ``z = W x + b``. The layer whose output is its input ``x`` is found on real probe
images: the last layer of the table, before the classifier's own layer, whose output (flattened) *is*
``x`` (``pooling = "none"``: an fc layer such as AlexNet's fc7, or a ResNet's ``avgpool`` of shape
``(C, 1, 1)``), or whose global spatial mean (``"mean"``: a conv/block layer followed by average
pooling) or maximum (``"max"``) is ``x``, to float32 rounding. In all three cases input ``j`` of the
classifier belongs to unit ``j`` alone, and ``W[c, j]`` is the change of class ``c``'s logit per unit
of the unit's (pooled) activation. Per unit the ``classes`` largest and smallest weights are kept,
with ``mean[j]``, the unit's mean classifier input over the probe set: from ``activations.npy``
(every probe image) when that input is the stored per-image value (``"none"`` on an fc layer,
``"max"``), else from one forward of the ablation's probe subset. ``W[c, j] * mean[j]`` is the unit's
mean contribution to the logit, which ranks units more honestly than the weight alone (a large weight
on a unit that never fires does nothing); ``contribution[j] = max_c W[c, j] * mean[j]``.

**Ablation** (Bau et al. 2020, PNAS, Fig. 3): for the shown units of ``ablation.layers``, zero the unit
(``output[:, j] = 0``, post-ReLU), run the network from that layer on (:mod:`sitegen.analyses._ablate`)
on ``images`` class-balanced probe images (``class_hist.probe_picks``), and compare with the intact
network: the overall accuracy, the mean true-class logit drop, and the classes whose mean true-class
logit drops most, with their accuracy change. Cost: units x images forwards of the network's
remainder, ``batch_size`` rows per call; the part before the layer runs once per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from sitegen.analyses import _ablate
from sitegen.analyses.class_hist import probe_picks
from sitegen.analyses.registry import Context, Problem, pick_layers
from sitegen.spec import EffectSpec, LayerPick
from sitegen.store.formats import AblationLayer, DirectEffect, EffectDoc

if TYPE_CHECKING:
    from sitegen.mine import Activations, Mined
    from sitegen.models.types import LayerInfo

__all__ = [
    "KIND",
    "Params",
    "Result",
    "ablation_scores",
    "check",
    "classifier",
    "direct_effect",
    "feeding_layer",
    "run",
    "save",
]

KIND = "effect"
Params = EffectSpec
_LOC = ("analyses", "effect", "ablation", "layers")
_ROWS_BYTES = 64 << 20  # the layer's output per remainder forward (default batch_size)
_CHECK = 8  # probe images that tell which layer feeds the classifier (0.2 CPU-s: alexnet, 224 px)


# --- the direct effect -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Direct:
    layer: str
    head: str
    pooling: str
    mean: np.ndarray  # [U]
    mean_images: int
    mean_source: str
    top: np.ndarray  # int [U, n]
    top_w: np.ndarray
    bottom: np.ndarray
    bottom_w: np.ndarray
    contribution: np.ndarray  # [U]


def direct_effect(weight: np.ndarray, mean: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    """Top and bottom classes of each unit's weight column, and its largest mean contribution.

    Args:
        weight: ``[K, U]``, the classifier's weights (``W[c, j]``: class ``c``, unit ``j``).
        mean: ``[U]``, each unit's mean classifier input.
        n: classes kept on each side (at most ``K``).

    Returns:
        ``top [U, n]`` (largest weight first), ``top_w``, ``bottom [U, n]`` (smallest first),
        ``bottom_w``, ``contribution [U]`` = ``max_c W[c, j] * mean[j]``. Ties: lower class first.
    """
    w = np.asarray(weight, dtype=np.float64)
    n = min(n, w.shape[0])
    top = np.argsort(-w, axis=0, kind="stable")[:n].T
    bottom = np.argsort(w, axis=0, kind="stable")[:n].T
    cols = np.arange(w.shape[1])[:, None]
    contribution = (w * np.asarray(mean, dtype=np.float64)[None, :]).max(axis=0) if len(w) else mean * 0
    return top, w[top, cols], bottom, w[bottom, cols], contribution


def classifier(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The network's last ``nn.Linear`` (its module path and the module), if any."""
    linears = [(p, m) for p, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def feeding_layer(
    model: nn.Module, layers: Sequence[LayerInfo], head: str, x: Tensor
) -> tuple[LayerInfo, str] | None:
    """The layer whose output is the classifier's input on images ``x``, and how (module docstring).

    Returns ``None`` when no layer of the table gives it (e.g. a conv layer flattened spatially).
    """
    paths = [info.module for info in layers]
    upto = paths.index(head) if head in paths else len(layers)
    candidates = [info for info in layers[:upto] if info.kind != "prob" and info.module]
    modules = dict(model.named_modules())
    outputs: dict[str, Tensor] = {}
    inputs: list[Tensor] = []
    handles = []
    for info in candidates:

        def keep(_m: nn.Module, _a: tuple, out: Tensor, path: str = info.module) -> None:
            outputs.setdefault(path, out.detach().clone())

        handles.append(modules[info.module].register_forward_hook(keep))
    handles.append(modules[head].register_forward_pre_hook(lambda _m, a: inputs.append(a[0].flatten(1))))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    if not inputs:
        return None
    want = inputs[0]
    for info in reversed(candidates):
        a = outputs.get(info.module)
        if a is None:
            continue
        for pooling, got in _pooled(a, want.shape[1]):
            if got.shape == want.shape and _close(got, want):
                return info, pooling
    return None


def _pooled(a: Tensor, width: int) -> list[tuple[str, Tensor]]:
    if a.dim() == 2 or (a.dim() == 4 and a.shape[2] * a.shape[3] == 1):
        return [("none", a.flatten(1))]
    if a.dim() == 4 and a.shape[1] == width:
        return [("mean", a.mean(dim=(2, 3))), ("max", a.amax(dim=(2, 3)))]
    return []


def _close(a: Tensor, b: Tensor) -> bool:
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a.double(), b.double(), rtol=1e-4, atol=1e-5 * max(scale, 1.0)))


def _stored_mean(acts: Activations, layer: str) -> np.ndarray:
    """Column means of one layer of ``activations.npy`` (read with ``pread`` in blocks of columns,
    :class:`sitegen.mine.LayerColumns`; float64 sums)."""
    cols = acts.layer(layer)
    n, units = cols.shape
    step = max(1, (1 << 22) // max(n, 1))  # 4M values a block
    total = np.zeros(units)
    for start in range(0, units, step):
        block = np.asarray(cols[:, start : start + step], dtype=np.float32)
        total[start : start + block.shape[1]] = block.sum(axis=0, dtype=np.float64)
    return total / max(n, 1)


def _forward_mean(model: nn.Module, head: nn.Linear, images: Tensor, batch: int) -> np.ndarray:
    """Mean of the classifier's input over ``images`` (normalized), ``batch`` at a time."""
    total: list[Tensor] = []
    handle = head.register_forward_pre_hook(lambda _m, a: total.append(a[0].flatten(1).double().sum(0)))
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch):
                model(images[start : start + batch])
    finally:
        handle.remove()
    return (torch.stack(total).sum(0) / max(len(images), 1)).cpu().numpy()


def _direct(ctx: Context, mined: Mined, p: EffectSpec, images: _Images) -> Direct | None:
    model = ctx.loaded.module
    found = classifier(model)
    if found is None or not images.picks:
        return None
    head_path, head = found
    fed = feeding_layer(model, ctx.loaded.layers, head_path, images.first(_CHECK))
    if fed is None:
        return None
    info, pooling = fed
    acts = mined.activations
    # "none" / "max": the classifier's input is the stored per-image value (the max over 1 x 1 for a
    # pooled (C, 1, 1) layer); a mean-pooled conv layer's is not (the store keeps maxima)
    if acts is not None and info.name in acts.offsets and pooling != "mean":
        mean, source, count = _stored_mean(acts, info.name), "activations", len(mined.labels)
    else:
        batch = p.ablation.batch_size or 64
        mean, source = _forward_mean(model, head, images.all(), batch), "forward"
        count = len(images.picks)
    weight = head.weight.detach().double().cpu().numpy()
    top, top_w, bottom, bottom_w, contribution = direct_effect(weight, mean, p.classes)
    return Direct(
        info.name, head_path, pooling, mean, count, source, top, top_w, bottom, bottom_w, contribution
    )


class _Images:
    """The probe subset, normalized on the device, loaded once and only as far as asked."""

    def __init__(self, ctx: Context, picks: list[int]) -> None:
        self.ctx, self.picks = ctx, picks
        self._x: Tensor | None = None

    def first(self, n: int) -> Tensor:
        if self._x is not None:
            return self._x[:n]
        return self._load(self.picks[:n])

    def all(self) -> Tensor:
        if self._x is None:
            self._x = self._load(self.picks)
        return self._x

    def _load(self, picks: list[int]) -> Tensor:
        x, _ = self.ctx.batch(picks)
        return self.ctx.loaded.normalize(x.to(self.ctx.device))


# --- ablation ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ablation:
    units: list[int]
    images: int
    base_accuracy: float
    base_logit: float
    accuracy: np.ndarray  # [U]
    logit_drop: np.ndarray  # [U]
    classes: np.ndarray  # int [U, n]
    drops: np.ndarray  # [U, n]
    class_accuracy: np.ndarray  # [U, n]
    class_images: np.ndarray  # int [C]


def ablation_scores(
    ab: _ablate.Ablated, labels: np.ndarray, num_classes: int, units: list[int], n: int
) -> Ablation:
    """Per unit: accuracy, mean true-class logit drop, and the ``n`` classes (among those with
    images) whose mean drop is largest (ties: lower class first), with their accuracy change."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    onehot = np.zeros((num_classes, len(labels)))
    onehot[labels, np.arange(len(labels))] = 1.0
    per = np.divide(1.0, counts, out=np.zeros(num_classes), where=counts > 0)[:, None] * onehot  # [C, N]
    drop = ab.base_logit[None, :] - ab.logit  # [U, N]
    acc_change = ab.correct.astype(np.float64) - ab.base_correct[None, :]
    class_drop = drop @ per.T  # [U, C]
    class_acc = acc_change @ per.T
    present = np.flatnonzero(counts > 0)
    k = min(n, len(present))
    order = np.argsort(-class_drop[:, present], axis=1, kind="stable")[:, :k]
    chosen = present[order]
    rows = np.arange(len(units))[:, None]
    return Ablation(
        units=list(units),
        images=len(labels),
        base_accuracy=float(ab.base_correct.mean()) if len(labels) else 0.0,
        base_logit=float(ab.base_logit.mean()) if len(labels) else 0.0,
        accuracy=ab.correct.mean(axis=1) if len(labels) else np.zeros(len(units)),
        logit_drop=drop.mean(axis=1) if len(labels) else np.zeros(len(units)),
        classes=chosen,
        drops=class_drop[rows, chosen],
        class_accuracy=class_acc[rows, chosen],
        class_images=counts,
    )


def _rows(info: LayerInfo) -> int:
    """Remainder rows per forward when the spec sets none: 64 MB of the layer's float32 output."""
    size = 4 * max(1, int(np.prod(info.shape)))
    return int(np.clip(_ROWS_BYTES // size, 64, 4096))


def _ablation_layers(ctx: Context, pick: LayerPick) -> list[LayerInfo]:
    layers = pick_layers(pick, ctx.loaded.layers, ctx.problem, _LOC, ctx.network)
    return [info for info in layers if info.kind != "prob" and info.module and ctx.shown.get(info.name)]


# --- the registered kind ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    classes: int
    direct: Direct | None
    ablation: dict[str, Ablation]


def check(params: EffectSpec, layers: Sequence[LayerInfo], problem: Problem, network: str) -> None:
    """The ablation's layer names, up front (one-line SpecError)."""
    if params.ablation.enabled:
        pick_layers(params.ablation.layers, layers, problem, _LOC, network)


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    model = ctx.loaded.module
    labels_all = np.asarray(ctx.labels, dtype=np.int64)
    picks = probe_picks(labels_all, params.ablation.images) if len(labels_all) else []
    images = _Images(ctx, picks)
    labels = labels_all[picks] if picks else np.zeros(0, np.int64)
    direct = _direct(ctx, mined, params, images)
    ablation: dict[str, Ablation] = {}
    layers = _ablation_layers(ctx, params.ablation.layers) if params.ablation.enabled and picks else []
    for i, info in enumerate(layers):
        units = list(ctx.shown[info.name])
        split = _ablate.split_at(model, info.module)

        def step(done: int, total: int, i: int = i) -> None:
            ctx.progress("effect", i * total + done, len(layers) * total)

        rows = params.ablation.batch_size or _rows(info)
        ab = _ablate.ablate(split, images.all(), labels, units, batch_rows=rows, progress=step)
        ablation[info.name] = ablation_scores(ab, labels, len(ctx.class_names), units, params.classes)
    if direct is None and not ablation:
        return None
    return Result(params.classes, direct, ablation)


def _g(a: np.ndarray, digits: int = 4) -> list:
    """Nested lists of floats at ``digits`` significant digits."""
    v = np.asarray(a, dtype=np.float64)
    if v.ndim == 0:
        return float(f"{float(v):.{digits}g}")  # type: ignore[return-value]
    return [_g(x, digits) for x in v] if v.ndim > 1 else [float(f"{x:.{digits}g}") for x in v]


def save(ctx: Context, result: Result, out: Path) -> EffectDoc:
    return document(result)


def document(result: Result) -> EffectDoc:
    """The store document of a :class:`Result` (no files besides ``effect.json``)."""
    d = result.direct
    direct = None
    if d is not None:
        direct = DirectEffect(
            layer=d.layer,
            head=d.head,
            pooling=d.pooling,  # type: ignore[arg-type]
            mean=_g(d.mean),
            mean_images=d.mean_images,
            mean_source=d.mean_source,  # type: ignore[arg-type]
            top=d.top.tolist(),
            top_w=_g(d.top_w),
            bottom=d.bottom.tolist(),
            bottom_w=_g(d.bottom_w),
            contribution=_g(d.contribution),
        )
    ablation = {
        name: AblationLayer(
            units=a.units,
            images=a.images,
            base_accuracy=round(a.base_accuracy, 6),
            base_logit=float(f"{a.base_logit:.5g}"),
            accuracy=[round(float(v), 6) for v in a.accuracy],
            logit_drop=_g(a.logit_drop),
            classes=a.classes.tolist(),
            drops=_g(a.drops),
            class_accuracy=[[round(float(v), 6) for v in row] for row in a.class_accuracy],
            class_images=[int(c) for c in a.class_images],
        )
        for name, a in result.ablation.items()
    }
    return EffectDoc(classes=result.classes, direct=direct, ablation=ablation)
