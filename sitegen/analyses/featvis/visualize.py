"""Feature visualization of some units of one layer: :func:`featvis` and its result :class:`FeatVis`.

:func:`featvis` checks its arguments, freezes the model (:func:`_frozen`), swaps in the forwards of
:mod:`._grad` for the duration, picks the objective (:func:`_objective`: the own-channel shortcut or
the whole layer) and optimizes the units chunk by chunk (:func:`._optim._optimize`). The method and
its defaults: :mod:`sitegen.analyses.featvis`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from sitegen.analyses._hooks import Truncated, get_module, truncated
from sitegen.analyses._phase import phase_backward
from sitegen.analyses.featvis._grad import _fast_max_pools, _OwnChannel, _redirected_relus
from sitegen.analyses.featvis._optim import _auto_chunk, _optimize
from sitegen.analyses.featvis._param import _Image
from sitegen.errors import ModelError
from sitegen.models.types import LayerInfo, LoadedModel

__all__ = ["PARAMS", "FeatVis", "featvis"]

#: Image parametrizations.
PARAMS = ("fourier", "pixel")


@dataclass(frozen=True, slots=True)
class FeatVis:
    """Optimized images of some units of one layer.

    Attributes:
        layer: the layer's friendly name.
        units: int64[U], the unit indices, in the order of the images.
        images: uint8[U, size, size, 3], un-normalized RGB (row, col, channel).
        objective: float32[U], the unit's mean activation on its final image (as returned, quantized
            to uint8, without transforms).
        start_objective: float32[U], the same on the initial image (step 0).
        size: image side in pixels.
        steps, lr, seed, param, decorrelate, grayscale, transforms, tv, l2: the options used.
    """

    layer: str
    units: np.ndarray
    images: np.ndarray
    objective: np.ndarray
    start_objective: np.ndarray
    size: int
    steps: int
    lr: float
    seed: int
    param: str
    decorrelate: bool
    grayscale: bool
    transforms: bool
    tv: float
    l2: float


def featvis(
    loaded: LoadedModel,
    layer: LayerInfo | str,
    units: Sequence[int] | None = None,
    *,
    size: int | None = None,
    steps: int = 128,
    lr: float = 0.1,
    seed: int = 0,
    param: str = "fourier",
    decorrelate: bool = True,
    grayscale: bool = False,
    transforms: bool = True,
    tv: float = 0.0,
    l2: float = 0.0,
    batch_units: int | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    own_channel: bool = True,
) -> FeatVis:
    """Optimize one image per unit to maximize the unit's mean activation (batched over units).

    Args:
        loaded: the network (left in the mode, and with the ``requires_grad`` flags, it came with).
        layer: a :class:`LayerInfo` of ``loaded`` or its friendly name / module path.
        units: unit indices (default: every unit of the layer).
        size: image side in pixels (default: ``loaded.input_size``).
        steps: Adam steps (lucent: 512).
        lr: Adam learning rate, in parameter space (spectrum or pre-sigmoid pixels; lucent: 0.05).
        seed: unit ``u`` draws all its randomness from ``numpy.random.default_rng([seed, u])``.
        param: ``"fourier"`` (decorrelated spectrum) or ``"pixel"`` (pixels + blur).
        decorrelate: mix colours by ImageNet's colour-correlation square root before the sigmoid.
        grayscale: optimize one grey channel, shown in all three (for networks trained on sketches:
            the colours they never saw only add noise to the picture); ``decorrelate`` is then moot.
        transforms: random jitter / scale / rotation each step (transformation robustness).
        tv: weight of the total-variation penalty (mean absolute neighbour difference, [0, 1] scale).
        l2: weight of the penalty ``mean((image - 0.5) ** 2)``.
        batch_units: units optimized together (default: as many as fit ~1 GiB of activations on CPU,
            half the free memory on CUDA, at most 256).
        device: where to optimize; the model is moved there.
        progress: called with the number of units finished after each chunk.
        own_channel: when the layer is an ``nn.Conv2d``, or an ``nn.ReLU`` fed directly by one, compute
            that last conv for each image's own unit only (see the module docstring; equal up to float
            rounding). False: the whole layer, then pick the unit.

    Returns:
        The images and the objective before and after, per unit.

    Raises:
        ModelError: ``layer`` is not a layer of ``loaded`` or a unit index is out of range.

    Example:
        >>> vis = featvis(loaded, "conv5", [0, 1, 2], steps=128)  # doctest: +SKIP
        >>> vis.images.shape, vis.objective > vis.start_objective  # doctest: +SKIP
        ((3, 64, 64, 3), array([ True,  True,  True]))
    """
    info = _resolve_layer(loaded, layer)
    unit_ids = list(range(info.units)) if units is None else [int(u) for u in units]
    bad = [u for u in unit_ids if not 0 <= u < info.units]
    if bad:
        raise ModelError(f"layer {info.name!r} has units 0..{info.units - 1}; got {bad[:5]}")
    if param not in PARAMS:
        raise ValueError(f"param must be one of {list(PARAMS)}, got {param!r}")
    if steps < 0 or lr <= 0:
        raise ValueError(f"need steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    size = int(size or loaded.input_size)
    device = torch.device(device)
    module = loaded.module.to(device)
    target = get_module(module, info.module)

    image = _Image(size, param, decorrelate, grayscale, device)
    images: list[np.ndarray] = []
    start: list[np.ndarray] = []
    final: list[np.ndarray] = []
    with (
        _frozen(module),
        torch.inference_mode(False),
        torch.enable_grad(),
        # oneDNN's strided-conv input gradient is slow; outermost: a strided conv target gets it too
        phase_backward(list(module.modules()) if device.type == "cpu" else []),
        truncated(module, target) as forward,
        _redirected_relus(module),
        _fast_max_pools(module),
        ExitStack() as stack,
    ):
        chunk = batch_units or _auto_chunk(forward, size, device)
        objective = _objective(forward, target, loaded, unit_ids, size, device, own_channel, stack)
        for lo in range(0, len(unit_ids), chunk):
            part = unit_ids[lo : lo + chunk]
            got = _optimize(image, objective, part, seed, steps, lr, transforms, tv, l2, device)
            images.append(got[0])
            start.append(got[1])
            final.append(got[2])
            if progress is not None:
                progress(len(part))

    def cat(parts: list[np.ndarray], shape: tuple[int, ...], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    return FeatVis(
        layer=info.name,
        units=np.asarray(unit_ids, dtype=np.int64),
        images=cat(images, (0, size, size, 3), np.uint8),
        objective=cat(final, (0,), np.float32),
        start_objective=cat(start, (0,), np.float32),
        size=size,
        steps=steps,
        lr=float(lr),
        seed=seed,
        param=param,
        decorrelate=decorrelate,
        grayscale=grayscale,
        transforms=transforms,
        tv=float(tv),
        l2=float(l2),
    )


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode without weight gradients; its mode and ``requires_grad`` flags restored."""
    flags = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    try:
        module.eval()
        module.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        module.train(was_training)


def _objective(
    forward: Truncated,
    target: nn.Module,
    loaded: LoadedModel,
    unit_ids: list[int],
    size: int,
    device: torch.device,
    own_channel: bool,
    stack: ExitStack,
) -> Callable[[Tensor, Tensor], Tensor]:
    """Each image's own unit's mean activation: by :class:`_OwnChannel` where it applies, else the layer's."""
    shortcut = None
    if own_channel and unit_ids:
        shortcut = _OwnChannel.find(forward, target, loaded, unit_ids, size, device)
    if shortcut is not None:
        return shortcut.objective(forward, loaded.normalize, stack)

    def objective(x01: Tensor, idx: Tensor) -> Tensor:
        act = forward(loaded.normalize(x01))
        own = act[torch.arange(len(idx), device=device), idx]  # [B, *spatial] or [B]
        return own.reshape(len(idx), -1).mean(1)

    return objective


def _resolve_layer(loaded: LoadedModel, layer: LayerInfo | str) -> LayerInfo:
    name = layer.name if isinstance(layer, LayerInfo) else layer
    try:
        return loaded.layer(name)
    except KeyError:
        valid = ", ".join(info.name for info in loaded.layers)
        raise ModelError(f"no layer {name!r} in {loaded.arch}; valid layers: {valid}") from None
