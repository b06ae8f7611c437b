"""Invariance of features and of the prediction to translation, rotation and scale.

Zeiler & Fergus 2013, sec. 4 and Fig. 5: a few images are vertically translated, rotated and scaled
by a range of amounts; for each amount we plot the Euclidean distance between the feature vector (a
layer's whole output, flattened) of the transformed and of the original image, at a low layer
(layer 1) and a high one (layer 7), and the probability of the true class. Small transforms change
layer-1 features a lot and top-layer features little; the output is fairly invariant to translation
and scale, much less to rotation (except for rotationally symmetric objects).

Distances are reported raw (as Z&F plot them) and **relative**: divided by the norm of the original
image's feature vector, so that layers of different sizes and scales share one axis (0 = unchanged,
1 = as far from the original as the original is from zero).

Transforms act on un-normalized [0, 1] images (docs/INTERNALS.md) through
``torchvision.transforms.v2.functional``, all keeping the image size:

- translation: vertical, by whole pixels (positive = down), as in Z&F Fig. 5 (a1);
- rotation: about the image centre, degrees counter-clockwise, bilinear;
- scale: resize by the factor (bilinear, antialiased), then centre-crop (> 1) or pad (< 1) back.

Uncovered pixels get each image's **fill**: the per-channel median of its 1-px border, i.e. the
background (white for sketches, whatever surrounds the object otherwise), so that the transform
does not add an artificial frame. The fill is applied exactly: ``T(x - fill) + fill`` with zero
padding, so one transform call serves a whole batch with per-image fills.

One module although past ~400 lines (issue 12): about 270 of them are code, for one technique, the
transforms it sweeps and its atlas entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode

from sitegen.analyses._hooks import forward_hook, get_module
from sitegen.analyses.class_hist import probe_picks
from sitegen.analyses.registry import Context, Problem, pick_layers, rounded
from sitegen.errors import ModelError
from sitegen.mine import Mined
from sitegen.models.types import LayerInfo, LoadedModel
from sitegen.spec import InvarianceSpec
from sitegen.store.formats import InvarianceDoc, InvarianceKind

__all__ = [
    "KIND",
    "KINDS",
    "InvarianceCurves",
    "InvarianceResult",
    "Params",
    "Result",
    "border_fill",
    "check",
    "invariance",
    "run",
    "save",
    "transform",
]

#: Transform kinds in the order of Z&F Fig. 5, and the unit of each one's amounts.
KINDS = {"translation": "px", "rotation": "degrees", "scale": "factor"}

#: Defaults for 64 px doodles: shifts of up to a quarter of the image (Z&F: ±60 px of 224), a full
#: turn in 15° steps, zoom 0.6–1.4 (Z&F's ranges).
DEFAULT_TRANSLATIONS = tuple(float(t) for t in range(-16, 17, 2))
DEFAULT_ROTATIONS = tuple(float(a) for a in range(0, 360, 15))
DEFAULT_SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4)


@dataclass(frozen=True, slots=True)
class InvarianceCurves:
    """One transform kind: feature distances and true-class probability against the amount.

    ``L`` layers, ``B`` images, ``A`` amounts.

    Attributes:
        kind: ``"translation"``, ``"rotation"`` or ``"scale"``.
        unit: unit of the amounts: ``"px"``, ``"degrees"`` or ``"factor"``.
        amounts: float32 ``[A]``: the amounts, as given.
        distance: float32 ``[L, B, A]``: ``||f(T x) - f(x)||_2`` of each layer's flattened output.
        relative: float32 ``[L, B, A]``: ``distance / ||f(x)||_2`` (0 where both are 0).
        true_prob: float32 ``[B, A]``: softmax probability of the true class of the transformed image.
        top_class: int64 ``[B, A]``: most probable class of the transformed image.
    """

    kind: str
    unit: str
    amounts: np.ndarray
    distance: np.ndarray
    relative: np.ndarray
    true_prob: np.ndarray
    top_class: np.ndarray


@dataclass(frozen=True, slots=True)
class InvarianceResult:
    """Invariance curves of some images (Zeiler & Fergus 2013, Fig. 5), numpy.

    Attributes:
        layers: friendly names of the layers compared (low first), the ``L`` axis of the curves.
        labels: int64 ``[B]``: true classes.
        fill: float32 ``[B, 3]``: per image, the fill of uncovered pixels (border median).
        base_norm: float32 ``[L, B]``: ``||f(x)||_2`` of the original images.
        base_true_prob: float32 ``[B]``: true-class probability of the original images.
        curves: ``{kind: InvarianceCurves}`` for the kinds given amounts, in :data:`KINDS` order.
    """

    layers: tuple[str, ...]
    labels: np.ndarray
    fill: np.ndarray
    base_norm: np.ndarray
    base_true_prob: np.ndarray
    curves: dict[str, InvarianceCurves]


def invariance(
    loaded: LoadedModel,
    images: Tensor,
    labels: Tensor | Sequence[int],
    *,
    layers: Sequence[str | LayerInfo] | None = None,
    translations: Sequence[float] = DEFAULT_TRANSLATIONS,
    rotations: Sequence[float] = DEFAULT_ROTATIONS,
    scales: Sequence[float] = DEFAULT_SCALES,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> InvarianceResult:
    """Feature distances and true-class probability under translation, rotation and scale (Z&F Fig. 5).

    Each forward batch holds all amounts of one kind for ``max(1, batch_size // amounts)`` images.

    Args:
        loaded: the network; its module is moved to ``device`` (and stays there) in eval mode.
        images: un-normalized ``[B, 3, H, W]`` images in [0, 1].
        labels: true class per image.
        layers: layers to compare (friendly names, module paths or :class:`LayerInfo`), Z&F use
            ``[layer 1, layer 7]``; ``None``: the first layer of the table and the top one (the last
            linear layer before the output layer, else the last conv/block layer).
        translations: vertical shifts in px (positive = down); empty to skip the kind.
        rotations: angles in degrees, counter-clockwise.
        scales: zoom factors (1 = unchanged).
        device: where to compute.
        batch_size: transformed copies per forward pass (at least one image's amounts of a kind).

    Returns:
        An :class:`InvarianceResult`.

    Raises:
        ModelError: an unknown layer (the message lists the names).
    """
    infos = _resolve_layers(loaded, layers)
    device = torch.device(device)
    model = loaded.module.to(device).eval()
    x = images.to(device, torch.float32)
    n = len(x)
    y = torch.as_tensor(labels, dtype=torch.int64).reshape(-1).to(device)
    if len(y) != n:
        raise ValueError(f"need one label per image: {n} images, {len(y)} labels")
    fill = border_fill(x)
    modules = [None if i.kind == "prob" else get_module(model, i.module) for i in infos]

    def forward(batch: Tensor) -> tuple[list[Tensor], Tensor]:
        return _features(loaded, model, infos, modules, batch)

    with torch.inference_mode():
        originals, base_probs = _originals(forward, x, batch_size, len(infos))
        norms = torch.stack([f.norm(dim=1) for f in originals])  # [L, B]
        base_true = base_probs.gather(1, y[:, None])[:, 0]
        curves: dict[str, InvarianceCurves] = {}
        for kind, amounts in (("translation", translations), ("rotation", rotations), ("scale", scales)):
            amounts = [float(a) for a in amounts]
            if amounts:
                curves[kind] = _curves(forward, kind, amounts, x, y, fill, originals, norms, batch_size)

    return InvarianceResult(
        layers=tuple(i.name for i in infos),
        labels=y.cpu().numpy().astype(np.int64),
        fill=fill[:, :, 0, 0].cpu().numpy().astype(np.float32),
        base_norm=norms.cpu().numpy().astype(np.float32),
        base_true_prob=base_true.cpu().numpy().astype(np.float32),
        curves=curves,
    )


_Forward = Callable[[Tensor], tuple[list[Tensor], Tensor]]


def _features(
    loaded: LoadedModel,
    model: nn.Module,
    infos: Sequence[LayerInfo],
    modules: Sequence[nn.Module | None],
    batch: Tensor,
) -> tuple[list[Tensor], Tensor]:
    """Flattened features of each layer and the softmax, for an un-normalized batch."""
    stores: list[list[Tensor]] = [[] for _ in infos]
    with ExitStack() as stack:
        for module, store in zip(modules, stores, strict=True):
            if module is not None:
                stack.enter_context(_capture_flat(module, store))
        probs = model(loaded.normalize(batch)).float().softmax(dim=1)
    feats = []
    for info, store in zip(infos, stores, strict=True):
        if info.kind == "prob":
            feats.append(probs)
        elif not store:
            raise ModelError(f"layer {info.name!r} ({info.module!r}) was not called in the forward")
        else:
            feats.append(store[-1])
    return feats, probs


def _originals(forward: _Forward, x: Tensor, batch_size: int, layers: int) -> tuple[list[Tensor], Tensor]:
    """The untransformed images' features (``[B, D_l]`` per layer) and softmax, in batches."""
    base_feats: list[list[Tensor]] = [[] for _ in range(layers)]
    base_probs = []
    for chunk in x.split(batch_size):
        feats, probs = forward(chunk)
        for acc, f in zip(base_feats, feats, strict=True):
            acc.append(f)
        base_probs.append(probs)
    return [torch.cat(f) for f in base_feats], torch.cat(base_probs)


def _curves(
    forward: _Forward,
    kind: str,
    amounts: list[float],
    x: Tensor,
    y: Tensor,
    fill: Tensor,
    originals: list[Tensor],
    norms: Tensor,
    batch_size: int,
) -> InvarianceCurves:
    """One kind's curves: all its amounts of ``max(1, batch_size // amounts)`` images per forward."""
    n, a = len(x), len(amounts)
    dist = torch.zeros(len(originals), n, a, device=x.device)
    true_p = torch.zeros(n, a, device=x.device)
    top = torch.zeros(n, a, dtype=torch.int64, device=x.device)
    group = max(1, batch_size // a)
    for start in range(0, n, group):
        idx = torch.arange(start, min(start + group, n), device=x.device)
        # amount-major block: copy j * len(idx) + i is image idx[i] under amounts[j]
        block = torch.cat([transform(x[idx], kind, amt, fill[idx]) for amt in amounts])
        img = idx.repeat(a)
        feats, probs = forward(block)
        for li, f in enumerate(feats):
            dist[li, idx] = (f - originals[li][img]).norm(dim=1).view(a, -1).T
        true_p[idx] = probs.gather(1, y[img, None])[:, 0].view(a, -1).T
        top[idx] = probs.argmax(dim=1).view(a, -1).T
    scale = norms[:, :, None].clamp(min=1e-12)
    relative = torch.where(dist > 0, dist / scale, torch.zeros_like(dist))
    return InvarianceCurves(
        kind=kind,
        unit=KINDS[kind],
        amounts=np.asarray(amounts, np.float32),
        distance=dist.cpu().numpy().astype(np.float32),
        relative=relative.cpu().numpy().astype(np.float32),
        true_prob=true_p.cpu().numpy().astype(np.float32),
        top_class=top.cpu().numpy().astype(np.int64),
    )


def border_fill(images: Tensor) -> Tensor:
    """Per image and channel, the median of the 1-px border: ``[B, C, H, W] -> [B, C, 1, 1]``."""
    border = torch.cat(
        [images[..., 0, :], images[..., -1, :], images[..., 1:-1, 0], images[..., 1:-1, -1]], dim=-1
    )
    return border.median(dim=-1).values[..., None, None]


def transform(images: Tensor, kind: str, amount: float, fill: Tensor) -> Tensor:
    """Translate (vertically, px), rotate (degrees) or scale (factor) a batch, keeping its size.

    Args:
        images: un-normalized ``[B, C, H, W]`` images.
        kind: one of :data:`KINDS`.
        amount: pixels, degrees or factor.
        fill: ``[B, C, 1, 1]`` value of uncovered pixels (see :func:`border_fill`).

    Returns:
        The transformed ``[B, C, H, W]`` batch.
    """
    # zero padding of (x - fill) is padding x with fill, per image and channel, in one call
    z = images - fill
    h, w = images.shape[-2:]
    bilinear = InterpolationMode.BILINEAR
    if kind == "translation":
        out = TF.affine(
            z, angle=0.0, translate=[0.0, amount], scale=1.0, shear=[0.0, 0.0], interpolation=bilinear
        )
    elif kind == "rotation":
        out = TF.rotate(z, amount, interpolation=bilinear)
    elif kind == "scale":
        if amount <= 0:
            raise ValueError(f"scale factors must be > 0, got {amount}")
        size = [max(1, round(h * amount)), max(1, round(w * amount))]
        out = TF.resize(z, size, interpolation=bilinear, antialias=True) if size != [h, w] else z
        if size[0] < h or size[1] < w:  # pad back to the size (zeros = fill), centred
            dh, dw = max(h - size[0], 0), max(w - size[1], 0)
            out = TF.pad(out, [dw // 2, dh // 2, dw - dw // 2, dh - dh // 2], fill=0.0)
        out = TF.center_crop(out, [h, w])
    else:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    return out + fill


# --- internals --------------------------------------------------------------------------------------


@contextmanager
def _capture_flat(module: nn.Module, store: list[Tensor]) -> Iterator[None]:
    """Store a float32 flattened copy of ``module``'s output (a copy, safe from in-place ops)."""

    def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, Tensor):
            raise ModelError(f"the output of {type(mod).__name__} is not a single tensor")
        store.append(output.flatten(1).to(torch.float32, copy=True))

    with forward_hook(module, hook):
        yield


def _resolve_layers(loaded: LoadedModel, layers: Sequence[str | LayerInfo] | None) -> list[LayerInfo]:
    if layers is None:
        return _default_layers(loaded)
    out = []
    for layer in layers:
        if isinstance(layer, LayerInfo):
            out.append(layer)
            continue
        try:
            out.append(loaded.layer(layer))
        except KeyError:
            names = [i.name for i in loaded.layers]
            raise ModelError(f"{loaded.arch}: no layer {layer!r}; layers: {names}") from None
    if not out:
        raise ValueError("layers must name at least one layer")
    return out


def _default_layers(loaded: LoadedModel) -> list[LayerInfo]:
    """Z&F's pair: the first layer and the top one (fc7: the linear before the output layer)."""
    if not loaded.layers:
        raise ModelError(f"{loaded.arch}: the layer table is empty")
    linear = [i for i in loaded.layers if i.kind == "linear"]
    spatial = [i for i in loaded.layers if i.kind in ("conv", "block")]
    top = linear[-2] if len(linear) >= 2 else spatial[-1] if spatial else None
    first = loaded.layers[0]
    return [first] if top is None or top == first else [first, top]


# --- the atlas entry (issue 12: sitegen.analyses.registry) ------------------------------------------

KIND = "invariance"
Params = InvarianceSpec


@dataclass(frozen=True, slots=True)
class Result:
    """Invariance curves of the probe picks (one per class, in class order)."""

    images: tuple[int, ...]
    curves: InvarianceResult


def check(params: Params, layers: Sequence[LayerInfo], problem: Problem, network: str) -> None:
    if params.layers is not None:
        pick_layers(params.layers, layers, problem, ("analyses", KIND, "layers"), network)


def run(ctx: Context, mined: Mined, params: Params) -> Result:
    lm = ctx.loaded
    layers = None
    if params.layers is not None:
        layers = pick_layers(params.layers, lm.layers, ctx.problem, ("analyses", KIND, "layers"), ctx.network)
    translations = params.translations
    if translations is None:  # up to a quarter of the image in 16 steps (Z&F: +-60 px of 224)
        step = max(1, lm.input_size // 32)
        translations = [float(t) for t in range(-8 * step, 8 * step + 1, step)]
    picks = probe_picks(mined.labels, params.images)
    images, labels = ctx.batch(picks)
    res = invariance(
        lm,
        images,
        labels,
        layers=layers,
        translations=translations,
        rotations=params.rotations,
        scales=params.scales,
        device=ctx.device,
    )
    return Result(tuple(picks), res)


def save(ctx: Context, result: Result, out: Path) -> InvarianceDoc:
    res = result.curves
    kinds = {
        kind: InvarianceKind(
            unit=c.unit,
            amounts=rounded(c.amounts, 3),
            relative=rounded(c.relative, 4),
            true_prob=rounded(c.true_prob, 4),
        )
        for kind, c in res.curves.items()
    }
    return InvarianceDoc(
        layers=list(res.layers), images=list(result.images), labels=res.labels.tolist(), kinds=kinds
    )
