"""Grad-CAM and CAM: where in the image a class's evidence lies, at a conv layer's resolution.

- **Grad-CAM** (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", eq. 1–2): the layer's channels weighted by the spatial mean of the
  class score's gradient, summed, then ReLU'd. :func:`gradcam` reproduces captum's
  ``LayerGradCam(model, layer).attribute(x, target=c, relu_attributions=True)`` (tests check 1e-5).
- **CAM** (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization", eq. 2): for a
  net that ends in global average pooling and ONE linear layer, the class's weights applied to the
  last feature maps, ``M_c = sum_k w_ck A_k``. There the Grad-CAM weights are ``w_ck / (h * w)``, so
  ``relu(CAM) = (h * w) * Grad-CAM`` at the pooled layer (Selvaraju et al., sec. 3.1).
- :func:`run_gradcam` is the atlas entry: heat maps for the true and the predicted class of some probe
  images, upsampled to the image and scaled to 0..1, numpy out.

Models take *normalized* images; :func:`run_gradcam` takes un-normalized [0, 1] images and normalizes
them on the device with :meth:`~sitegen.models.LoadedModel.normalize` (docs/INTERNALS.md).

One module although past ~400 lines (issue 12): about 230 of them are code, for one technique and its
atlas entry; CAM stays beside the Grad-CAM it equals up to scale.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sitegen.analyses._hooks import forward_hook, get_module
from sitegen.analyses.activation_maps import blend
from sitegen.analyses.class_hist import probe_picks
from sitegen.analyses.registry import Context, Problem, one_layer
from sitegen.errors import ModelError
from sitegen.mine import Mined
from sitegen.models.types import LayerInfo, LoadedModel
from sitegen.spec import GradCamSpec
from sitegen.store import codecs
from sitegen.store.formats import GradCamDoc, GradCamImage

__all__ = [
    "KIND",
    "GradCamResult",
    "Params",
    "Result",
    "cam",
    "check",
    "default_layer",
    "gradcam",
    "run",
    "run_gradcam",
    "save",
]

log = logging.getLogger("sitegen")

#: Layer kinds whose output is a spatial map Grad-CAM can localize with (LayerInfo.kind).
SPATIAL_KINDS = ("conv", "block")


@dataclass(frozen=True, slots=True)
class GradCamResult:
    """Grad-CAM heat maps of some images for their true and their predicted class.

    Attributes:
        layer: friendly name of the layer the maps were computed at.
        module: its ``named_modules()`` path.
        grid: ``(rows, cols)`` of the layer's map (the heat maps' native resolution).
        true_maps: float32 ``[B, H, W]``: Grad-CAM of the true class, bilinearly upsampled to the image
            and scaled to 0..1 per map (``(m - min) / (max - min)``; an all-zero map stays zero).
        pred_maps: float32 ``[B, H, W]``: the same for the predicted class.
        true_peak: float32 ``[B]``: the max of each raw (ReLU'd, un-upsampled) true-class map, the scale
            that the 0..1 maps drop; 0 means no positive evidence at this layer.
        pred_peak: float32 ``[B]``: the same for the predicted class.
        labels: int64 ``[B]``: the true classes.
        predicted: int64 ``[B]``: argmax of the model's output.
        predicted_prob: float32 ``[B]``: softmax probability of the predicted class.
        true_prob: float32 ``[B]``: softmax probability of the true class.
    """

    layer: str
    module: str
    grid: tuple[int, int]
    true_maps: np.ndarray
    pred_maps: np.ndarray
    true_peak: np.ndarray
    pred_peak: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    predicted_prob: np.ndarray
    true_prob: np.ndarray


def gradcam(model: nn.Module, layer: str, images: Tensor, classes: Tensor | Sequence[int]) -> Tensor:
    """Grad-CAM of ``classes`` at ``layer``, ReLU'd, at the layer's resolution.

    Args:
        model: a classifier taking *normalized* images (in eval mode; left as it is).
        layer: ``named_modules()`` path of a module whose output is a ``[B, C, h, w]`` map.
        images: normalized ``[B, 3, H, W]`` batch on the model's device.
        classes: one class index per image (the score differentiated is the model's raw output for it).

    Returns:
        ``[B, h, w]``: ``relu(sum_k mean_ij(d y_c / d A_k) * A_k)``, equal to captum's
        ``LayerGradCam(model, module).attribute(images, target=classes, relu_attributions=True)``
        squeezed.

    Raises:
        ModelError: no module at ``layer`` (the message lists the valid paths), or its output is not
            a single 4-D map.

    Example:
        >>> net = torchvision.models.resnet18(num_classes=10).eval()
        >>> gradcam(net, "layer4", torch.randn(2, 3, 64, 64), [3, 7]).shape
        torch.Size([2, 2, 2])
    """
    module = get_module(model, layer)
    targets = _as_classes(classes, len(images), images.device)
    (maps,), _ = _gradcam_many(model, module, layer, images, [targets])
    return maps


def cam(model: nn.Module, images: Tensor, classes: Tensor | Sequence[int]) -> Tensor:
    """Class activation maps (Zhou et al. 2016) of a net ending in global average pooling + one Linear.

    The last linear layer called must be fed by the spatial mean of a ``[B, C, h, w]`` map (an
    ``nn.AdaptiveAvgPool2d(1)`` or a global ``nn.AvgPool2d``, then at most a flatten/dropout) and its
    output must be the model's output; this is checked numerically on ``images``.

    Args:
        model: the classifier, taking normalized images (eval mode).
        images: normalized ``[B, 3, H, W]`` batch on the model's device.
        classes: one class index per image.

    Returns:
        ``[B, h, w]``: ``sum_k w[c, k] * A_k`` (no bias, no ReLU: negative where the map argues against
        the class). ``relu`` of it is ``h * w`` times :func:`gradcam` at the pooled layer.

    Raises:
        ModelError: the model does not end in global average pooling followed by one linear layer
            (use :func:`gradcam` instead).
    """
    targets = _as_classes(classes, len(images), images.device)
    pools = (nn.AdaptiveAvgPool2d, nn.AvgPool2d)
    events: list[tuple[str, nn.Module, Tensor]] = []

    def on_pool(module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], Tensor) and args[0].dim() == 4:
            events.append(("pool", module, args[0].detach().clone()))

    def on_linear(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if isinstance(output, Tensor):
            events.append(("linear", module, output.detach().clone()))

    hooks = [m.register_forward_pre_hook(on_pool) for m in model.modules() if isinstance(m, pools)]
    hooks += [m.register_forward_hook(on_linear) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        for h in hooks:
            h.remove()

    hint = "CAM needs global average pooling followed by one nn.Linear at the end of the net; use gradcam"
    last = max((i for i, e in enumerate(events) if e[0] == "linear"), default=None)
    if last is None:
        raise ModelError(f"{type(model).__name__} calls no nn.Linear: {hint}")
    pool = max((i for i, e in enumerate(events[:last]) if e[0] == "pool"), default=None)
    if pool is None:
        raise ModelError(f"{type(model).__name__} has no average pooling before its last nn.Linear: {hint}")
    linear = events[last][1]
    assert isinstance(linear, nn.Linear)
    feats = events[pool][2]
    if feats.shape[1] != linear.in_features:
        raise ModelError(
            f"{type(model).__name__}: the last nn.Linear takes {linear.in_features} features, not the "
            f"global average of a {feats.shape[1]}-channel map: {hint}"
        )
    # the defining property, checked rather than assumed from module types: output = W · mean(A) + b
    with torch.no_grad():
        expected = F.linear(feats.mean(dim=(2, 3)), linear.weight, linear.bias)
    if not isinstance(logits, Tensor) or logits.shape != expected.shape or not torch.allclose(
        logits, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max().clamp(min=1.0))
    ):
        raise ModelError(
            f"{type(model).__name__}: the output is not W · (global mean of the last map) + b "
            f"(something follows the pooling other than one linear layer): {hint}"
        )
    weights = linear.weight.detach()[targets]  # [B, C]
    return torch.einsum("bchw,bc->bhw", feats, weights)


def default_layer(loaded: LoadedModel) -> LayerInfo:
    """The last layer of kind ``conv`` or ``block``: the layer Selvaraju et al. use (the last conv's output).

    Raises:
        ModelError: the layer table has no conv or block layer.
    """
    for info in reversed(loaded.layers):
        if info.kind in SPATIAL_KINDS:
            return info
    names = [i.name for i in loaded.layers]
    raise ModelError(f"{loaded.arch}: no conv or block layer for Grad-CAM; layers: {names}")


def run_gradcam(
    loaded: LoadedModel,
    images: Tensor,
    labels: Tensor | Sequence[int],
    *,
    layer: str | LayerInfo | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 32,
) -> GradCamResult:
    """Grad-CAM heat maps for the true and the predicted class of each image (the atlas entry).

    One forward and two backward passes per batch (true class, then predicted class).

    Args:
        loaded: the network; its module is moved to ``device`` (and stays there) in eval mode.
        images: un-normalized ``[B, 3, H, W]`` images in [0, 1] (normalized here, on the device).
        labels: the true class of each image.
        layer: friendly name, module path or :class:`LayerInfo` of a conv/block layer; ``None`` for
            :func:`default_layer` (the last conv/block layer).
        device: where to compute.
        batch_size: images per forward/backward pass.

    Returns:
        A :class:`GradCamResult` (numpy arrays).

    Raises:
        ModelError: unknown layer (the message lists the names), or one without a spatial output.
    """
    info = _resolve_layer(loaded, layer)
    device = torch.device(device)
    model = loaded.module.to(device).eval()
    module = get_module(model, info.module)
    targets_all = _as_classes(labels, len(images), torch.device("cpu"))
    keys = ("true", "pred", "tpeak", "ppeak", "predicted", "pp", "tp")
    parts: dict[str, list[Tensor]] = {k: [] for k in keys}
    grid = (0, 0)
    for start in range(0, len(images), batch_size):
        x = loaded.normalize(images[start : start + batch_size].to(device, torch.float32))
        y = targets_all[start : start + batch_size].to(device)

        def predicted_of(logits: Tensor) -> Tensor:
            return logits.detach().argmax(dim=1)

        (true_map, pred_map), logits = _gradcam_many(model, module, info.module, x, [y, predicted_of])
        grid = (int(true_map.shape[1]), int(true_map.shape[2]))
        probs = logits.detach().float().softmax(dim=1)
        pred = probs.argmax(dim=1)
        size = x.shape[-2:]
        parts["true"].append(_upsample01(true_map, size).cpu())
        parts["pred"].append(_upsample01(pred_map, size).cpu())
        parts["tpeak"].append(true_map.flatten(1).amax(dim=1).cpu())
        parts["ppeak"].append(pred_map.flatten(1).amax(dim=1).cpu())
        parts["predicted"].append(pred.cpu())
        parts["pp"].append(probs.gather(1, pred[:, None])[:, 0].cpu())
        parts["tp"].append(probs.gather(1, y[:, None])[:, 0].cpu())

    def cat(key: str, dtype: Any) -> np.ndarray:
        return torch.cat(parts[key]).numpy().astype(dtype) if parts[key] else np.zeros((0,), dtype)

    h, w = images.shape[-2:]
    empty = np.zeros((0, h, w), np.float32)
    return GradCamResult(
        layer=info.name,
        module=info.module,
        grid=grid,
        true_maps=cat("true", np.float32) if parts["true"] else empty,
        pred_maps=cat("pred", np.float32) if parts["pred"] else empty,
        true_peak=cat("tpeak", np.float32),
        pred_peak=cat("ppeak", np.float32),
        labels=targets_all.numpy().astype(np.int64),
        predicted=cat("predicted", np.int64),
        predicted_prob=cat("pp", np.float32),
        true_prob=cat("tp", np.float32),
    )


# --- internals --------------------------------------------------------------------------------------


@contextmanager
def _grad_capture(module: nn.Module, path: str, store: list[Tensor]) -> Iterator[None]:
    """Keep ``module``'s output (made to require grad) and hand the rest of the net a clone of it.

    The clone is what captum does too (``compute_layer_gradients_and_eval``): an in-place op after the
    layer (torchvision's ``ReLU(inplace=True)``, a residual ``+=``) then changes the clone, never the
    tensor we differentiate with respect to.
    """

    def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> Tensor:
        if not isinstance(output, Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ModelError(f"Grad-CAM needs a [B, C, h, w] map at {path!r}; its output is {shape}")
        if not output.requires_grad:  # frozen weights and a plain input: the output is a leaf
            output.requires_grad_()
        store.append(output)
        return output.clone()

    with forward_hook(module, hook):
        yield


def _gradcam_many(
    model: nn.Module, module: nn.Module, path: str, x: Tensor, class_sets: list[Any]
) -> tuple[list[Tensor], Tensor]:
    """One forward, one backward per class set (a tensor, or a function of the logits giving one)."""
    store: list[Tensor] = []
    with torch.enable_grad(), _grad_capture(module, path, store):
        logits = model(x)
        if not store:
            raise ModelError(f"module {path!r} was not called in the model's forward")
        act = store[-1]
        maps = []
        for i, classes in enumerate(class_sets):
            targets = classes(logits) if callable(classes) else classes
            score = logits.gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, act, retain_graph=i < len(class_sets) - 1)
            # Selvaraju et al. eq. 1: neuron importance = global-average-pooled gradient
            weights = grad.mean(dim=(2, 3), keepdim=True)
            maps.append(F.relu((weights * act.detach()).sum(dim=1)))  # eq. 2
    return maps, logits.detach()


def _as_classes(classes: Tensor | Sequence[int], n: int, device: torch.device) -> Tensor:
    t = torch.as_tensor(classes, dtype=torch.int64).reshape(-1).to(device)
    if len(t) != n:
        raise ValueError(f"need one class per image: {n} images, {len(t)} classes")
    return t


def _upsample01(maps: Tensor, size: torch.Size) -> Tensor:
    """Bilinear upsampling to the image, then ``(m - min) / (max - min)`` per map (0 where flat)."""
    up = F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).amin(dim=1).view(-1, 1, 1)
    span = up.flatten(1).amax(dim=1).view(-1, 1, 1) - lo
    return torch.where(span > 0, (up - lo) / span.clamp(min=1e-12), torch.zeros_like(up))


def _resolve_layer(loaded: LoadedModel, layer: str | LayerInfo | None) -> LayerInfo:
    if layer is None:
        return default_layer(loaded)
    if isinstance(layer, LayerInfo):
        return layer
    try:
        return loaded.layer(layer)
    except KeyError:
        names = [i.name for i in loaded.layers]
        raise ModelError(f"{loaded.arch}: no layer {layer!r}; layers: {names}") from None


# --- the atlas entry (issue 12: sitegen.analyses.registry) ------------------------------------------

KIND = "gradcam"
Params = GradCamSpec
_OVERLAY_ALPHA = 0.55


@dataclass(frozen=True, slots=True)
class Result:
    """Grad-CAM of the probe picks (one per class, in class order): their indices and the maps."""

    images: tuple[int, ...]
    maps: GradCamResult


def check(params: Params, layers: Sequence[LayerInfo], problem: Problem, network: str) -> None:
    one_layer(params.layer, layers, problem, ("analyses", KIND, "layer"), network)


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    """Grad-CAM of the true and the predicted class of ``params.images`` probe images."""
    info = one_layer(params.layer, ctx.loaded.layers, ctx.problem, ("analyses", KIND, "layer"), ctx.network)
    if info is None:
        log.info("%s: Grad-CAM skipped: no conv layer", ctx.network)
        return None
    picks = probe_picks(mined.labels, params.images)
    images, labels = ctx.batch(picks)
    return Result(tuple(picks), run_gradcam(ctx.loaded, images, labels, layer=info, device=ctx.device))


def save(ctx: Context, result: Result, out: Path) -> GradCamDoc:
    """Viridis overlays ``gradcam/<idx>-true|pred.png`` and the document."""
    res = result.maps
    entries = []
    for j, idx in enumerate(result.images):
        pic = ctx.picture(idx)
        names = {}
        for which, maps in (("true", res.true_maps), ("pred", res.pred_maps)):
            names[which] = f"gradcam/{idx}-{which}.png"
            codecs.write_png(out / names[which], blend(pic, maps[j], _OVERLAY_ALPHA))
        entries.append(
            GradCamImage(
                index=idx,
                label=int(res.labels[j]),
                predicted=int(res.predicted[j]),
                true_prob=round(float(res.true_prob[j]), 4),
                pred_prob=round(float(res.predicted_prob[j]), 4),
                true_peak=round(float(res.true_peak[j]), 5),
                pred_peak=round(float(res.pred_peak[j]), 5),
                true_png=names["true"],
                pred_png=names["pred"],
            )
        )
    return GradCamDoc(layer=res.layer, grid=list(res.grid), images=entries)
