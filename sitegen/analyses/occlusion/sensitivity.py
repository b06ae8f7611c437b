"""Occlusion sensitivity (Zeiler & Fergus 2013, sec. 4.2 and Fig. 7): :func:`occlusion`.

For every position of a grey square over each image: the probabilities of the true and the predicted
class, the most probable class and one unit's spatial max (:class:`OcclusionResult`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sitegen.analyses._hooks import forward_hook, get_module
from sitegen.analyses.occlusion.occluder import DEFAULT_FILL, _occlude, occluder_grid
from sitegen.errors import ModelError
from sitegen.models.types import LayerInfo, LoadedModel

__all__ = ["OcclusionResult", "occlusion"]


@dataclass(frozen=True, slots=True)
class OcclusionResult:
    """Occlusion-sensitivity maps of some images (Zeiler & Fergus 2013, Fig. 7), numpy.

    ``B`` images, an ``R x C`` grid of occluder positions.

    Attributes:
        size: side of the grey square in input pixels.
        stride: pixels between neighbouring positions.
        fill: the square's grey in un-normalized [0, 1] space.
        rows: float32 ``[R]``: the square's centre row at each grid row (``top + (size - 1) / 2``).
        cols: float32 ``[C]``: the same for grid columns.
        true_prob: float32 ``[B, R, C]``: probability of the true class with the square there.
        pred_prob: float32 ``[B, R, C]``: probability of the class predicted on the intact image.
        top_class: int64 ``[B, R, C]``: the most probable class with the square there (Fig. 7 (e)).
        activation: float32 ``[B, R, C]``: spatial max of ``units[b]`` of ``layer`` with the square there.
        layer: friendly name of the layer of ``activation``.
        units: int64 ``[B]``: the unit followed per image.
        labels: int64 ``[B]``: true classes.
        predicted: int64 ``[B]``: class predicted on the intact image.
        base_true_prob: float32 ``[B]``: true-class probability on the intact image.
        base_pred_prob: float32 ``[B]``: predicted-class probability on the intact image.
        base_activation: float32 ``[B]``: the unit's spatial max on the intact image.
    """

    size: int
    stride: int
    fill: float
    rows: np.ndarray
    cols: np.ndarray
    true_prob: np.ndarray
    pred_prob: np.ndarray
    top_class: np.ndarray
    activation: np.ndarray
    layer: str
    units: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    base_true_prob: np.ndarray
    base_pred_prob: np.ndarray
    base_activation: np.ndarray


def occlusion(
    loaded: LoadedModel,
    images: Tensor,
    labels: Tensor | Sequence[int],
    *,
    size: int = 8,
    stride: int = 4,
    layer: LayerInfo | str | None = None,
    unit: int | None = None,
    fill: float = DEFAULT_FILL,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
) -> OcclusionResult:
    """Occlusion-sensitivity maps (Zeiler & Fergus 2013, Fig. 7) of some images.

    Args:
        loaded: the network; its module is moved to ``device`` (and stays there) in eval mode.
        images: un-normalized ``[B, 3, H, W]`` images in [0, 1].
        labels: true class per image.
        size: side of the grey square (8 px suits 64 px doodles: 15 x 15 positions at stride 4).
        stride: pixels between positions.
        layer: layer of the activation map (a :class:`LayerInfo`, friendly name or module path);
            ``None``: the last conv/block layer (the paper's layer 5).
        unit: the unit to follow in every image; ``None``: per image, the unit with the largest
            spatial max on the intact image.
        fill: the square's grey in un-normalized space.
        device: where to compute.
        batch_size: occluded copies per forward pass.
        progress: ``progress(done, total)`` in occluded copies, after each forward pass.

    Returns:
        An :class:`OcclusionResult`.

    Raises:
        ModelError: unknown layer, or ``unit`` not a unit of it.
    """
    info = _resolve_layer(loaded, layer)
    device = torch.device(device)
    model = loaded.module.to(device).eval()
    x = images.to(device, torch.float32)
    n, _, h, w = x.shape
    y = torch.as_tensor(labels, dtype=torch.int64).reshape(-1).to(device)
    if len(y) != n:
        raise ValueError(f"need one label per image: {n} images, {len(y)} labels")
    tops, lefts = (torch.as_tensor(a, device=device) for a in occluder_grid((h, w), size, stride))
    grid_r, grid_c = len(tops), len(lefts)
    target = None if info.kind == "prob" else get_module(model, info.module)
    forward = _forward(model, target, info)

    with torch.inference_mode():
        base_probs, base_units = _chunked(forward, [loaded.normalize(c) for c in x.split(batch_size)])
        pred = base_probs.argmax(dim=1)
        if unit is None:
            units = base_units.argmax(dim=1)
        elif 0 <= unit < base_units.shape[1]:
            units = torch.full((n,), unit, dtype=torch.int64, device=device)
        else:
            last = base_units.shape[1] - 1
            raise ModelError(f"unit {unit} is not a unit of layer {info.name!r} (0..{last})")

        # every (image, position) pair, image-major, streamed in chunks of batch_size
        total = n * grid_r * grid_c
        true_p = torch.empty(total, device=device)
        pred_p = torch.empty(total, device=device)
        top = torch.empty(total, dtype=torch.int64, device=device)
        act = torch.empty(total, device=device)
        done = 0
        for chunk in torch.arange(total, device=device).split(batch_size):
            img, pos = chunk // (grid_r * grid_c), chunk % (grid_r * grid_c)
            occluded = _occlude(x, img, tops[pos // grid_c], lefts[pos % grid_c], size, fill)
            probs, maxima = forward(loaded.normalize(occluded))
            true_p[chunk] = probs.gather(1, y[img, None])[:, 0]
            pred_p[chunk] = probs.gather(1, pred[img, None])[:, 0]
            top[chunk] = probs.argmax(dim=1)
            act[chunk] = maxima.gather(1, units[img, None])[:, 0].float()
            done += len(chunk)  # a shape: no device sync
            if progress is not None:
                progress(done, total)

    def grid(t: Tensor) -> np.ndarray:
        return t.view(n, grid_r, grid_c).cpu().numpy()

    centre = (size - 1) / 2
    return OcclusionResult(
        size=size,
        stride=stride,
        fill=float(fill),
        rows=(tops.cpu().numpy() + centre).astype(np.float32),
        cols=(lefts.cpu().numpy() + centre).astype(np.float32),
        true_prob=grid(true_p).astype(np.float32),
        pred_prob=grid(pred_p).astype(np.float32),
        top_class=grid(top).astype(np.int64),
        activation=grid(act).astype(np.float32),
        layer=info.name,
        units=units.cpu().numpy().astype(np.int64),
        labels=y.cpu().numpy().astype(np.int64),
        predicted=pred.cpu().numpy().astype(np.int64),
        base_true_prob=base_probs.gather(1, y[:, None])[:, 0].cpu().numpy().astype(np.float32),
        base_pred_prob=base_probs.gather(1, pred[:, None])[:, 0].cpu().numpy().astype(np.float32),
        base_activation=base_units.gather(1, units[:, None])[:, 0].float().cpu().numpy().astype(np.float32),
    )


def _forward(
    model: nn.Module, target: nn.Module | None, info: LayerInfo
) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """The forward of :func:`occlusion`: ``model`` with ``target``'s per-unit spatial max captured."""

    def forward(batch: Tensor) -> tuple[Tensor, Tensor]:
        """Softmax of the output and per-unit spatial max of the layer, for a normalized batch."""
        if target is None:  # prob: the units are the classes
            probs = model(batch).float().softmax(dim=1)
            return probs, probs
        store: list[Tensor] = []
        with _capture(target, _unit_max, store):
            probs = model(batch).float().softmax(dim=1)
        if not store:
            raise ModelError(f"layer {info.name!r} (module {info.module!r}) was not called in the forward")
        return probs, store[-1]

    return forward


def _unit_max(out: Tensor) -> Tensor:
    """Per-unit spatial max: ``[B, C, h, w] -> [B, C]``; a ``[B, D]`` output is its own max."""
    return out.flatten(2).amax(dim=2) if out.dim() > 2 else out


@contextmanager
def _capture(module: nn.Module, reduce: Callable[[Tensor], Tensor], store: list[Tensor]) -> Iterator[None]:
    """Store ``reduce(output)`` of ``module`` at each call.

    Reduced at once, inside the hook: a later in-place op (a residual ``+=``) cannot change it.
    """

    def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, Tensor):
            raise ModelError(f"the output of {type(mod).__name__} is not a single tensor")
        store.append(reduce(output))

    with forward_hook(module, hook):
        yield


def _chunked(
    forward: Callable[[Tensor], tuple[Tensor, Tensor]], batches: list[Tensor]
) -> tuple[Tensor, Tensor]:
    outs = [forward(b) for b in batches]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def _resolve_layer(loaded: LoadedModel, layer: LayerInfo | str | None) -> LayerInfo:
    if isinstance(layer, LayerInfo):
        return layer
    if layer is None:
        for info in reversed(loaded.layers):
            if info.kind in ("conv", "block"):
                return info
        raise ModelError(f"{loaded.arch}: no conv or block layer; layers: {[i.name for i in loaded.layers]}")
    try:
        return loaded.layer(layer)
    except KeyError:
        names = [i.name for i in loaded.layers]
        raise ModelError(f"{loaded.arch}: no layer {layer!r}; layers: {names}") from None
