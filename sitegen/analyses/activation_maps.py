"""Activation maps: for a few probe images, the strongest channels of every conv layer over the image.

For each image and conv layer, the ``channels`` channels with the largest activation L2 norm are
drawn over the image: each map is scaled min-max on its own (so every panel uses the whole colour
scale; compare strengths with the reported norms), resampled to the image so that map position
``(row, col)`` lands on its receptive-field centre (``rf_offset + row * rf_stride``; bilinear), coloured
with viridis and blended over the image. One forward pass per batch of images serves every layer and
the image's top-5 predictions.

The viridis table is sampled from matplotlib's at 17 points and interpolated linearly (no plotting
dependency at run time).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sitegen.analyses import _hooks
from sitegen.models.types import LayerInfo, LoadedModel

__all__ = ["ActivationMaps", "ChannelMap", "ImageMaps", "LayerMaps", "activation_maps", "blend", "viridis"]

# matplotlib's viridis at 0, 1/16, ..., 1 (uint8 RGB)
_VIRIDIS = np.array(
    [
        (68, 1, 84),
        (72, 24, 106),
        (71, 45, 123),
        (66, 64, 134),
        (59, 82, 139),
        (51, 99, 141),
        (44, 114, 142),
        (38, 130, 142),
        (33, 145, 140),
        (31, 160, 136),
        (40, 174, 128),
        (63, 188, 115),
        (94, 201, 98),
        (132, 212, 75),
        (173, 220, 48),
        (216, 226, 25),
        (253, 231, 37),
    ],
    dtype=np.float32,
)


@dataclass(frozen=True, slots=True)
class ChannelMap:
    """One channel's map over one image.

    Attributes:
        channel: channel index in the layer.
        norm: L2 norm of the channel's map (the ranking key).
        overlay: uint8 ``[H, W, 3]``: the map in viridis blended over the image.
    """

    channel: int
    norm: float
    overlay: np.ndarray


@dataclass(frozen=True, slots=True)
class LayerMaps:
    """The top channels of one layer for one image, strongest first."""

    layer: str
    channels: tuple[ChannelMap, ...]


@dataclass(frozen=True, slots=True)
class ImageMaps:
    """Everything shown for one probe image.

    Attributes:
        index: probe index.
        label: true class index (-1 when not given).
        top5: ``(class index, probability)`` pairs, most probable first.
        layers: per conv layer, in network order.
    """

    index: int
    label: int
    top5: tuple[tuple[int, float], ...]
    layers: tuple[LayerMaps, ...]


@dataclass(frozen=True, slots=True)
class ActivationMaps:
    """Activation maps of a few probe images (see :func:`activation_maps`)."""

    images: tuple[ImageMaps, ...]


def viridis(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to uint8 RGB with the viridis colour map (shape ``values.shape + (3,)``)."""
    x = np.clip(np.asarray(values, dtype=np.float32), 0, 1) * (len(_VIRIDIS) - 1)
    lo = np.floor(x).astype(np.int64).clip(0, len(_VIRIDIS) - 2)
    t = (x - lo)[..., None]
    rgb = _VIRIDIS[lo] * (1 - t) + _VIRIDIS[lo + 1] * t
    return np.rint(rgb).astype(np.uint8)


def activation_maps(
    loaded: LoadedModel,
    images_by_index: Callable[[int], Tensor],
    indices: Sequence[int],
    *,
    channels: int = 3,
    device: torch.device | str = "cpu",
    labels: Sequence[int] | None = None,
    layers: Sequence[LayerInfo] | None = None,
    alpha: float = 0.5,
    batch_size: int = 16,
) -> ActivationMaps:
    """Top channels of every conv layer over each image, with the image's top-5 predictions.

    Args:
        loaded: the network.
        images_by_index: probe index -> un-normalized ``[3, H, W]`` image in [0, 1].
        indices: which probe images.
        channels: channels per layer, by activation L2 norm.
        device: where to run the forward pass.
        labels: the images' true classes (same order as ``indices``), if known.
        layers: which layers (default: every ``conv`` layer of the layer table).
        alpha: opacity of the colour map over the image.
        batch_size: images per forward pass.

    Returns:
        One :class:`ImageMaps` per index, in order.

    Example:
        >>> maps = activation_maps(loaded, lambda i: probe[i][0], [0, 17], channels=3)
        >>> maps.images[0].layers[0].channels[0].overlay.shape
        (64, 64, 3)
    """
    chosen = [info for info in (layers if layers is not None else loaded.layers) if info.kind == "conv"]
    dev = torch.device(device)
    module = loaded.module
    out_images: list[ImageMaps] = []
    for s in range(0, len(indices), batch_size):
        part = [int(i) for i in indices[s : s + batch_size]]
        raw = torch.stack([images_by_index(i) for i in part]).to(dev, torch.float32)
        acts: dict[str, Tensor] = {}
        handles = [
            _hooks.get_module(module, info.module).register_forward_hook(
                functools.partial(_keep, acts, info.name)
            )
            for info in chosen
        ]
        try:
            with torch.no_grad():
                logits = module(loaded.normalize(raw))
        finally:
            for h in handles:
                h.remove()
        probs = torch.softmax(logits.float(), dim=1)
        top = probs.topk(min(5, probs.shape[1]), dim=1)
        pictures = (raw.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        height, width = raw.shape[-2:]
        per_layer = {info.name: _top_maps(acts[info.name], info, channels, height, width) for info in chosen}
        for b, index in enumerate(part):
            layer_maps = []
            for info in chosen:
                chans, norms, maps = per_layer[info.name]
                layer_maps.append(
                    LayerMaps(
                        layer=info.name,
                        channels=tuple(
                            ChannelMap(int(c), float(n), blend(pictures[b], m, alpha))
                            for c, n, m in zip(chans[b], norms[b], maps[b], strict=True)
                        ),
                    )
                )
            out_images.append(
                ImageMaps(
                    index=index,
                    label=int(labels[s + b]) if labels is not None else -1,
                    top5=tuple(
                        (int(c), float(p))
                        for c, p in zip(top.indices[b].tolist(), top.values[b].tolist(), strict=True)
                    ),
                    layers=tuple(layer_maps),
                )
            )
    return ActivationMaps(images=tuple(out_images))


def _keep(acts: dict[str, Tensor], name: str, module: nn.Module, args: tuple[Any, ...], out: Tensor) -> None:
    # a copy: a later in-place op (torchvision's inplace ReLUs) must not change it
    acts[name] = out.detach().float().clone()


def _top_maps(
    act: Tensor, info: LayerInfo, channels: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top channels ``[B, n]``, their norms ``[B, n]`` and their [0, 1] maps on the image ``[B, n, H, W]``."""
    norms = act.flatten(2).norm(dim=2)  # [B, C]
    top = norms.topk(min(channels, norms.shape[1]), dim=1)
    maps = act[torch.arange(act.shape[0])[:, None], top.indices]  # [B, n, h, w]
    lo = maps.amin(dim=(2, 3), keepdim=True)
    hi = maps.amax(dim=(2, 3), keepdim=True)
    maps = (maps - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (
        top.indices.cpu().numpy(),
        top.values.cpu().numpy(),
        _to_image(maps, info, height, width).cpu().numpy(),
    )


def _to_image(maps: Tensor, info: LayerInfo, height: int, width: int) -> Tensor:
    """Resample ``[B, n, h, w]`` maps to the image so that position (row, col) sits at its RF centre."""
    b, n, h, w = maps.shape
    if info.rf_stride <= 0:
        return F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
    # pixel y sits at map coordinate (y - offset) / stride; grid_sample wants [-1, 1] over the map's
    # first..last position (align_corners=True), edges repeat beyond them
    ys = (torch.arange(height, dtype=maps.dtype) - info.rf_offset) / info.rf_stride
    xs = (torch.arange(width, dtype=maps.dtype) - info.rf_offset) / info.rf_stride
    gy = 2 * ys / max(h - 1, 1) - 1
    gx = 2 * xs / max(w - 1, 1) - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).to(maps.device)  # (x, y) order
    out = F.grid_sample(
        maps.reshape(b * n, 1, h, w),
        grid.expand(b * n, -1, -1, -1),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    return out.reshape(b, n, height, width)


def blend(picture: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    """``picture`` (uint8 RGB) mixed with the viridis colouring of ``heat`` (0..1) at opacity ``alpha``."""
    mixed = picture.astype(np.float32) * (1 - alpha) + viridis(heat).astype(np.float32) * alpha
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
