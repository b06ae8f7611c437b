"""SmoothGrad (Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise", eq. 3).

The plain saliency map of class ``c`` is the input gradient of its score, ``M_c(x) = dS_c/dx``; it is
visually noisy. SmoothGrad averages it over ``n`` noisy copies of the image::

    M̂_c(x) = 1/n · Σ_{i=1..n} M_c(x + N(0, σ²)),   σ = noise · (max(x) − min(x))

with the paper's defaults ``noise = 0.15`` (their 10–20 %) and ``n = 16`` here (they show 50; the
maps settle by about 20). ``S_c`` is the class's logit (the score before softmax, as in the paper),
``c`` the image's true class, and ``x`` the un-normalized [0, 1] image the page shows (the model
normalizes it on the device), so the map lives in the image's own pixels. ``noise = 0`` gives the
plain gradient. The page shows ``max`` over colour channels of ``|M̂|`` (the paper's absolute-value
variant), scaled by its 99th percentile (their outlier clip).

This module is the whole technique: its registry entry (``KIND``, ``Params``, ``Result``, ``run``,
``save``), nothing elsewhere but the render section ``sitegen/render/sections/smoothgrad.py``, the
partial ``templates/_smoothgrad.html``, its spec section and store document (issue 12).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sitegen.analyses.activation_maps import viridis
from sitegen.analyses.class_hist import probe_picks
from sitegen.analyses.registry import Context
from sitegen.mine import Mined
from sitegen.spec import SmoothGradSpec
from sitegen.store import codecs
from sitegen.store.formats import SmoothGradDoc, SmoothGradImage

__all__ = ["KIND", "Params", "Result", "run", "save", "saliency", "smooth_grad"]

KIND = "smoothgrad"
Params = SmoothGradSpec
_CLIP = 99.0  # percentile that maps to the top of the colour scale (Smilkov et al., sec. 3)


def smooth_grad(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    classes: Sequence[int] | Tensor,
    *,
    samples: int = 16,
    noise: float = 0.15,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Mean input gradient of each image's class score over ``samples`` noisy copies.

    Args:
        forward: images ``[N, C, H, W]`` -> scores ``[N, classes]`` (normalization included).
        images: ``[B, C, H, W]``; the noise and the result have its dtype and device.
        classes: the class whose score is differentiated, per image.
        samples: noisy copies per image (``n``).
        noise: σ as a share of each image's ``max - min`` (0: the plain gradient, ``samples`` times).
        generator: CPU generator for the noise: ``torch.randn((samples, B, C, H, W))`` drawn once, in
            that order, so a hand loop over the same draws gives the same maps.
        batch_size: noisy copies per forward/backward pass.

    Returns:
        ``[B, C, H, W]``: the SmoothGrad maps (same dtype and device as ``images``).
    """
    b = images.shape[0]
    x = images.detach()
    cls = torch.as_tensor(classes, dtype=torch.long, device=x.device).reshape(b)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).reshape(b, 1, 1, 1)
    eps = torch.randn((samples, *x.shape), generator=generator, dtype=x.dtype).to(x.device)
    noisy = (x[None] + noise * span[None] * eps).reshape(samples * b, *x.shape[1:])
    targets = cls.repeat(samples)
    grads = []
    for start in range(0, len(noisy), batch_size):
        chunk = noisy[start : start + batch_size].clone().requires_grad_(True)
        scores = forward(chunk)
        picked = scores.gather(1, targets[start : start + batch_size, None]).sum()
        (g,) = torch.autograd.grad(picked, chunk)  # samples are independent: the sum's gradient is each one's
        grads.append(g)
    return torch.cat(grads).reshape(samples, *x.shape).mean(0)


def saliency(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``max`` over channels of ``|map|`` scaled to 0..1 by its 99th percentile, and that scale.

    Args:
        maps: ``[B, C, H, W]`` gradients.

    Returns:
        float32 ``[B, H, W]`` in [0, 1] and float64 ``[B]`` scales (0: an all-zero map, left zero).
    """
    mag = np.abs(np.asarray(maps, dtype=np.float64)).max(axis=1)
    scale = np.percentile(mag.reshape(len(mag), -1), _CLIP, axis=1) if len(mag) else np.zeros(0)
    safe = np.where(scale > 0, scale, 1.0)[:, None, None]
    return np.clip(mag / safe, 0, 1).astype(np.float32), scale


@dataclass(frozen=True, slots=True)
class Result:
    """SmoothGrad and the plain gradient of the probe picks (one per class, in class order)."""

    images: tuple[int, ...]
    labels: np.ndarray  # int64 [B]: true classes (the differentiated ones)
    predicted: np.ndarray  # int64 [B]: argmax on the clean image
    smooth: np.ndarray  # float32 [B, 3, H, W]
    plain: np.ndarray  # float32 [B, 3, H, W]: the gradient at the clean image
    samples: int
    noise: float


def run(ctx: Context, mined: Mined, params: Params) -> Result:
    lm = ctx.loaded
    picks = probe_picks(mined.labels, params.images)
    images, labels = ctx.batch(picks)
    model = lm.module.to(ctx.device).eval()

    def forward(x: Tensor) -> Tensor:
        return model(lm.normalize(x))

    x = images.to(ctx.device, torch.float32)
    gen = torch.Generator().manual_seed(ctx.seed)
    smooth = smooth_grad(
        forward,
        x,
        labels,
        samples=params.samples,
        noise=params.noise,
        generator=gen,
        batch_size=params.batch_size,
    )
    plain = smooth_grad(forward, x, labels, samples=1, noise=0.0, batch_size=params.batch_size)
    with torch.no_grad():
        predicted = forward(x).argmax(1)
    return Result(
        images=tuple(picks),
        labels=np.asarray(labels, dtype=np.int64),
        predicted=predicted.cpu().numpy().astype(np.int64),
        smooth=smooth.cpu().numpy().astype(np.float32),
        plain=plain.cpu().numpy().astype(np.float32),
        samples=params.samples,
        noise=params.noise,
    )


def save(ctx: Context, result: Result, out: Path) -> SmoothGradDoc:
    """``smoothgrad/<idx>-smooth.png`` and ``-plain.png`` (viridis) and the document."""
    smooth, s_scale = saliency(result.smooth)
    plain, p_scale = saliency(result.plain)
    entries = []
    for j, idx in enumerate(result.images):
        names = {"smooth": f"smoothgrad/{idx}-smooth.png", "plain": f"smoothgrad/{idx}-plain.png"}
        codecs.write_png(out / names["smooth"], viridis(smooth[j]))
        codecs.write_png(out / names["plain"], viridis(plain[j]))
        entries.append(
            SmoothGradImage(
                index=idx,
                label=int(result.labels[j]),
                predicted=int(result.predicted[j]),
                smooth_png=names["smooth"],
                plain_png=names["plain"],
                smooth_scale=float(f"{s_scale[j]:.5g}"),
                plain_scale=float(f"{p_scale[j]:.5g}"),
            )
        )
    return SmoothGradDoc(samples=result.samples, noise=result.noise, images=entries)
