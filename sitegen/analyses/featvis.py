"""Feature visualization by optimization: for each unit, an image that maximizes its mean activation.

Activation maximization (Erhan et al. 2009, "Visualizing Higher-Layer Features of a Deep Network")
with the regularizers of Mordvintsev, Olah et al. (2015 "Inceptionism", 2017 "Feature Visualization",
Distill) as implemented in Lucid / lucent:

- **Parametrization.** ``"fourier"`` (default): the image is a scaled spectrum, ``irfft2`` of
  ``spectrum * 1 / max(|f|, 1/size)`` (lucent ``param/spatial.py`` ``fft_image``: whitened
  frequencies so that gradient steps do not favour high-frequency noise), divided by Lucid's
  "magic" constant 4. ``"pixel"``: one free value per pixel (pre-sigmoid), and a 3×3 Gaussian
  blur (σ = 0.5 px) after the sigmoid, part of the forward so it is differentiable (the blur
  regularizer of Yosinski et al. 2015, "Understanding Neural Networks Through Deep Visualization").
- **Colour decorrelation** (``decorrelate=True``): the three channels are mixed by the square root of
  ImageNet's colour correlation matrix (lucent ``param/color.py``), then squashed to [0, 1] by a
  sigmoid. The [0, 1] image goes through ``LoadedModel.normalize`` like any probe image. With
  ``grayscale=True`` one grey channel is optimized and repeated (sketch networks).
- **Transformation robustness** (``transforms=True``, lucent ``transform.standard_transforms`` made
  cheap): each step every image is jittered by up to ±6 px per 128 px, scaled by one of 0.90 … 1.10
  and rotated by one of −10 … 10 degrees (0 five times as likely as the others, as in lucent), in ONE
  ``affine_grid``/``grid_sample`` per step; what moves in from outside the image is grey (0.5,
  lucent's ``pad(constant_value=0.5)``). The model sees ``size × size`` pixels: no upsampling to
  224 px (lucent upsamples, runs the whole network and leaves its weights trainable: 9.6× slower
  per unit-step, shared/PERFORMANCE.md).
- Optional total-variation (``tv``) and L2-towards-grey (``l2``) penalties on the [0, 1] image
  (Mahendran & Vedaldi 2015; Simonyan et al. 2014).

Optimizer: Adam (Kingma & Ba 2015), element-wise (torch's fused kernel). Defaults: 128 steps at lr 0.1
(lucent's ``render_vis``: 512 at 0.05); on the doodles AlexNet at 64 px they reach 85-97 % of the
activation of 256 steps at 0.05 in half the time. Use more steps for large images. Every ``nn.ReLU``
of the model uses Lucid's *redirected* ReLU gradient (:class:`_RedirectedReLU`), so units that are
off on the initial grey image still start moving.

The objective of a conv (or block/pool) unit is the MEAN of its channel over all positions (lucent
``objectives.channel``); of a linear unit its neuron; of a ``prob`` unit the class *logit* (the input
of the softmax), as Simonyan et al. 2014 recommend: raising a softmax probability is easiest by
lowering the other classes.

**Batched, and identical to one unit at a time.** All units of a chunk are optimized together: the
batch axis is the unit axis, and each batch element's loss is its own unit's activation. The loss is
the SUM over the batch, so each element's gradient is exactly its single-unit gradient; Adam is
element-wise, and the model runs in eval mode, so batch elements never interact. Randomness is drawn
per unit from ``numpy.random.default_rng([seed, unit])``: first the initial parameters, then the
transform parameters of every step. A unit's image therefore depends only on ``(seed, unit)`` and the
options, never on which other units share its chunk or on ``batch_units`` (up to float rounding of
batched vs single convolutions).

The forward stops right after the target layer (:func:`sitegen.analyses._hooks.truncated`); the model's
parameters are frozen (``requires_grad_(False)``: no weight gradients) and its ``requires_grad`` flags,
train/eval mode, ReLU and max-pool forwards and hooks are restored on exit, even on error. The model
is moved to ``device`` and stays there (as in :func:`sitegen.mine.mine`).

**Speed** (each exact up to float rounding; ``benchmarks/featurevis.py``, alexnet conv5 at 128 px):

- *Own channel* (``own_channel=True``): when the layer is an ``nn.Conv2d`` or an ``nn.ReLU`` fed
  directly by one, the forward stops at that conv's input and each image gets only its own unit's
  output channel of the conv (:class:`_OwnChannel`; alexnet conv5: 1 of 256 channels).
- Strided convs (alexnet conv1, 11×11 stride 4) get their input gradient by phases
  (:func:`sitegen.analyses._hooks.phase_backward`, ~4x faster than oneDNN's).
- ``nn.MaxPool2d`` runs its forward in channels-last layout and its backward in NCHW
  (:class:`_MaxPool`: the same maxima and argmax, each direction in its ~5-10x faster layout on CPU).
- The redirected ReLU backward is one ``threshold_backward`` pass plus one reduction; colours are
  mixed by a ``matmul`` rather than an ``einsum`` (3x faster); Adam is one fused pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sitegen.analyses._hooks import StopForward, Truncated, get_module, phase_backward, truncated
from sitegen.analyses.registry import Context, Problem, pick_layers, rounded
from sitegen.errors import ModelError
from sitegen.mine import Mined
from sitegen.models._api import LayerInfo, LoadedModel
from sitegen.spec import FeatVisSpec
from sitegen.store import codecs
from sitegen.store.formats import FeatVisDoc, FeatVisLayer

__all__ = ["KIND", "PARAMS", "FeatVis", "Params", "Result", "check", "featvis", "run", "save"]

#: Image parametrizations.
PARAMS = ("fourier", "pixel")

# Square root of ImageNet's colour correlation matrix (Lucid/lucent param/color.py), normalized so its
# largest column has norm 1.
_COLOR_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
_COLOR_NORMALIZED = _COLOR_SVD_SQRT / np.linalg.norm(_COLOR_SVD_SQRT, axis=0).max()

# Lucid's fft_image divides the image by this "magic" constant (less saturated images).
_FFT_MAGIC = 4.0
_INIT_SD = 0.01  # lucent's default sd of the initial spectrum / pixels
# Pixel parametrization: a 3×3 Gaussian of σ = 0.5 px after the sigmoid (Yosinski et al. 2015 blur with
# σ 0.5-1 px). On a small net at 24-32 px, σ = 0.7, or an in-place blur of the parameters every 4 steps
# as Yosinski does, cost half the reachable activation of some units.
_BLUR_SIGMA = 0.5

# lucent transform.standard_transforms: random_scale([1 + (i - 5) / 50 for i in range(11)]),
# random_rotate(list(range(-10, 11)) + 5 * [0]); jitter(8) then jitter(4) at 128 px ≈ ±6 px.
_SCALES = np.array([1 + (i - 5) / 50 for i in range(11)], dtype=np.float64)
_ANGLES = np.array(list(range(-10, 11)) + 5 * [0], dtype=np.float64)
_JITTER_PER_128 = 6.0

# Bytes of activations (forward saved + backward) per unit allowed in one chunk when batch_units is None.
_CPU_BUDGET = 1 << 30
_MAX_AUTO_CHUNK = 256

# torch's fused Adam kernel (torch.optim.Adam(fused=True) calls it), where this torch has one
_FUSED_ADAM: Callable[..., None] | None = getattr(torch, "_fused_adam_", None)


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
    flags = [p.requires_grad for p in module.parameters()]
    was_training = module.training
    images: list[np.ndarray] = []
    start: list[np.ndarray] = []
    final: list[np.ndarray] = []
    try:
        module.eval()
        module.requires_grad_(False)
        with (
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
            shortcut = None
            if own_channel and unit_ids:
                shortcut = _OwnChannel.find(forward, target, loaded, unit_ids, size, device)
            if shortcut is not None:
                objective = shortcut.objective(forward, loaded.normalize, stack)
            else:

                def objective(x01: Tensor, idx: Tensor) -> Tensor:
                    act = forward(loaded.normalize(x01))
                    own = act[torch.arange(len(idx), device=device), idx]  # [B, *spatial] or [B]
                    return own.reshape(len(idx), -1).mean(1)

            for lo in range(0, len(unit_ids), chunk):
                part = unit_ids[lo : lo + chunk]
                got = _optimize(image, objective, part, seed, steps, lr, transforms, tv, l2, device)
                images.append(got[0])
                start.append(got[1])
                final.append(got[2])
                if progress is not None:
                    progress(len(part))
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        module.train(was_training)

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


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward, for an image through which no gradient passes, lets it through anyway.

    Lucid's ``redirected_relu_grad`` (``lucid/misc/redirected_relu_grad.py``): a unit whose ReLU is off
    everywhere on the initial image would get a zero gradient forever. Where the ordinary ReLU gradient
    of a batch element is all zero, that element gets the incoming gradient instead, minus the parts
    that would push already-negative inputs lower. Decided per batch element: units stay independent.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        # autograd's own ReLU backward (grad where x > 0, else 0): one pass, where() is ~10x slower on CPU
        relu_grad = torch.ops.aten.threshold_backward(grad, x, 0)
        if x.dim() < 2:
            return relu_grad
        passes = relu_grad.flatten(1).abs().amax(1) > 0
        if bool(passes.all()):  # the usual case after the first steps: one sync, no extra work
            return relu_grad
        # grad > 0 means the loss (-objective) wants this value lower: pointless where x <= 0
        zero = torch.zeros((), dtype=grad.dtype, device=grad.device)
        redirected = torch.where((x <= 0) & (grad > 0), zero, grad)
        return torch.where(passes.view(-1, *[1] * (x.dim() - 1)), relu_grad, redirected)


@contextmanager
def _redirected_relus(model: torch.nn.Module) -> Iterator[None]:
    """Every ``nn.ReLU`` of ``model`` computes :class:`_RedirectedReLU` for the duration.

    The hooks are prepended, so a ReLU that is the target layer is captured after the swap; they read
    the ReLU's input, which :func:`~sitegen.analyses._hooks.truncated` keeps intact (out-of-place ReLUs).
    """

    def swap(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Tensor:
        return _RedirectedReLU.apply(args[0])

    with ExitStack() as hooks:
        for m in model.modules():
            if isinstance(m, torch.nn.ReLU):
                hooks.callback(m.register_forward_hook(swap, prepend=True).remove)
        yield


# Units whose own-channel result is compared with the whole layer's before the shortcut is used.
_PROBE_UNITS = 4


class _OwnChannel:
    """The last conv of the layer computed for each image's own output channel only.

    The objective of a conv unit reads one channel of the layer; the rest of the layer's last conv is
    computed and thrown away (alexnet conv5: 256 channels for 1). When the target module is an
    ``nn.Conv2d``, or an ``nn.ReLU`` whose input is the output of an ``nn.Conv2d`` (checked on a probe
    forward: the very same tensor), the forward stops at that conv's input and image ``b`` gets
    ``conv(x_b)[unit_b]`` alone: ``weight[unit_b]`` against its input, as one batched matrix product of
    the kernel taps followed by shifted sums (stride 1) or as a convolution with ``groups = B``
    (strided). The ReLU target then applies the same redirected ReLU to that channel. Equal to the
    whole layer up to float rounding (other summation order); the probe compares both on a few random
    images and units and the shortcut is not used if they differ.
    """

    def __init__(self, conv: nn.Conv2d, relu: bool) -> None:
        self.conv, self.relu = conv, relu

    @classmethod
    def find(
        cls,
        forward: Truncated,
        target: nn.Module,
        loaded: LoadedModel,
        units: list[int],
        size: int,
        device: torch.device,
    ) -> _OwnChannel | None:
        """The shortcut for ``target``, or None where it does not apply (or disagrees with the layer)."""
        if not isinstance(target, nn.Conv2d | nn.ReLU):
            return None
        convs = [m for m in forward.model.modules() if isinstance(m, nn.Conv2d)]
        inputs: list[tuple[nn.Conv2d, Any]] = []  # (conv, input) of every conv call
        outputs: list[tuple[nn.Conv2d, Any]] = []  # (conv, output) of every conv call that returned
        target_input: list[Any] = []

        def record_input(module: nn.Conv2d, args: tuple[Any, ...]) -> None:
            inputs.append((module, args[0] if args else None))

        def record_output(module: nn.Conv2d, args: tuple[Any, ...], output: Any) -> None:
            outputs.append((module, output))  # after any hook that replaced it (phase_backward)

        def record_target(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            target_input.append(args[0] if args else None)

        k = min(_PROBE_UNITS, len(units))
        gen = torch.Generator().manual_seed(0)
        probe = torch.rand(k, 3, size, size, generator=gen).to(device)
        with ExitStack() as hooks, torch.no_grad():
            for m in convs:
                hooks.callback(m.register_forward_pre_hook(record_input).remove)
                hooks.callback(m.register_forward_hook(record_output).remove)
            hooks.callback(target.register_forward_hook(record_target, prepend=True).remove)
            act = forward(loaded.normalize(probe))
        if isinstance(target, nn.Conv2d):
            conv, relu = target, False
        else:
            feeding = [m for m, out in outputs if target_input and out is target_input[0]]
            if not feeding:
                return None
            conv, relu = feeding[0], True
        calls = [x for m, x in inputs if m is conv]
        if len(calls) != 1 or not isinstance(calls[0], Tensor) or calls[0].dim() != 4:
            return None  # a conv called twice (shared) or not on one 4-d tensor
        if type(conv).forward is not nn.Conv2d.forward or act.dim() != 4:
            return None  # a subclass with a forward of its own
        idx = torch.tensor(units[:k], device=device)
        shortcut = cls(conv, relu)
        with torch.no_grad():
            own = shortcut.channel(calls[0], idx)
        whole = act[torch.arange(k, device=device), idx]
        scale = float(whole.abs().max()) + 1e-6
        if own.shape != whole.shape or not torch.allclose(own, whole, rtol=1e-3, atol=1e-4 * scale):
            return None
        return shortcut

    def channel(self, x: Tensor, idx: Tensor) -> Tensor:
        """``conv(x)[b, idx[b]]`` (after the ReLU for a ReLU target) for each ``b``: [B, h, w]."""
        y = _conv_channel(self.conv, x, idx)
        return _RedirectedReLU.apply(y) if self.relu else y

    def objective(
        self, forward: Truncated, normalize: Callable[[Tensor], Tensor], hooks: ExitStack
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """The objective (mean of each image's own channel); the forward stops at the conv's input."""
        captured: list[Tensor] = []

        def stop(module: nn.Module, args: tuple[Any, ...]) -> None:
            captured.append(args[0])
            raise StopForward

        hooks.callback(self.conv.register_forward_pre_hook(stop).remove)

        def objective(x01: Tensor, idx: Tensor) -> Tensor:
            captured.clear()
            forward.run(normalize(x01))
            if not captured:
                raise ModelError(f"module {type(self.conv).__name__} was not called in the model's forward")
            return self.channel(captured[0], idx).flatten(1).mean(1)

        return objective


def _conv_channel(conv: nn.Conv2d, x: Tensor, idx: Tensor) -> Tensor:
    """``conv(x)[b, idx[b]]`` for each batch element ``b``: [B, h, w], without the other channels."""
    n = len(idx)
    weight = conv.weight[idx]  # [B, C_in / groups, kh, kw]
    bias = conv.bias[idx] if conv.bias is not None else None
    if conv.groups > 1:  # the input channels of each unit's group
        group = idx // (conv.out_channels // conv.groups)
        x = x.unflatten(1, (conv.groups, -1))[torch.arange(n, device=x.device), group]
    padding: str | tuple[int, ...] = conv.padding
    if conv.padding_mode != "zeros":
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=conv.padding_mode)
        padding = (0, 0)
    if tuple(conv.stride) != (1, 1) or isinstance(padding, str):
        y = F.conv2d(x.flatten(0, 1)[None], weight, bias, conv.stride, padding, conv.dilation, groups=n)
        return y[0]
    ph, pw = padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    _, c, height, width = x.shape
    kh, kw = weight.shape[-2:]
    dh, dw = conv.dilation
    oh, ow = height - dh * (kh - 1), width - dw * (kw - 1)
    # every tap's product with every input position, one matrix product per image: [B, kh * kw, H, W]
    taps = torch.bmm(weight.flatten(2).transpose(1, 2), x.reshape(n, c, height * width))
    taps = taps.view(n, kh, kw, height, width)
    y = taps[:, 0, 0, :oh, :ow] if bias is None else taps[:, 0, 0, :oh, :ow] + bias.view(n, 1, 1)
    for i in range(kh):
        for j in range(kw):
            if i or j:
                y = y + taps[:, i, j, i * dh : i * dh + oh, j * dw : j * dw + ow]
    return y


class _MaxPool(torch.autograd.Function):
    """``F.max_pool2d`` of an NCHW tensor, its forward computed in channels-last memory format.

    The same maxima and the same argmax indices (the first maximum of each window in both), so the
    same gradient; on CPU the NCHW forward is ~10x slower than channels-last for the small maps of a
    featvis batch (alexnet pool1, 32 × 64 × 31 × 31: 25 ms vs 2 ms), while the NCHW backward is ~5x
    faster than the channels-last one: each direction uses the faster layout.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, geometry: tuple[tuple[int, int], ...], ceil_mode: bool) -> Tensor:
        kernel, stride, padding, dilation = geometry
        y, indices = F.max_pool2d(
            x.contiguous(memory_format=torch.channels_last),
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode=ceil_mode,
            return_indices=True,
        )
        indices = indices.contiguous()
        ctx.save_for_backward(x, indices)
        ctx.geometry, ctx.ceil_mode = geometry, ceil_mode
        return y.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:
        x, indices = ctx.saved_tensors
        kernel, stride, padding, dilation = ctx.geometry
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, kernel, stride, padding, dilation, ctx.ceil_mode, indices
        )
        return grad_x, None, None


@contextmanager
def _fast_max_pools(model: torch.nn.Module) -> Iterator[None]:
    """Every plain ``nn.MaxPool2d`` of ``model`` computes :class:`_MaxPool` on 4-d NCHW CPU inputs."""

    def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))

    def make(m: nn.MaxPool2d) -> Callable[[Tensor], Tensor]:
        kernel = pair(m.kernel_size)
        geometry = (kernel, pair(m.stride or kernel), pair(m.padding), pair(m.dilation))
        plain = nn.MaxPool2d.forward.__get__(m)

        def forward(x: Tensor) -> Tensor:
            if x.dim() != 4 or x.device.type != "cpu" or not x.is_contiguous():
                return plain(x)
            return _MaxPool.apply(x, geometry, m.ceil_mode)

        return forward

    with ExitStack() as restore:
        for m in model.modules():
            if type(m) is nn.MaxPool2d and not m.return_indices and "forward" not in m.__dict__:
                m.forward = make(m)  # type: ignore[method-assign,assignment]
                restore.callback(m.__dict__.pop, "forward")
        yield


def _resolve_layer(loaded: LoadedModel, layer: LayerInfo | str) -> LayerInfo:
    name = layer.name if isinstance(layer, LayerInfo) else layer
    try:
        return loaded.layer(name)
    except KeyError:
        valid = ", ".join(info.name for info in loaded.layers)
        raise ModelError(f"no layer {name!r} in {loaded.arch}; valid layers: {valid}") from None


class _Image:
    """The parametrization: raw parameters [B, ...] → images [B, 3, size, size] in [0, 1]."""

    def __init__(
        self, size: int, param: str, decorrelate: bool, grayscale: bool, device: torch.device
    ) -> None:
        self.size = size
        self.param = param
        self.channels = 1 if grayscale else 3
        # a grey image has no colours to decorrelate; mixed as color @ [3, H * W] (einsum: 3x slower)
        self.color = None if grayscale or not decorrelate else torch.from_numpy(_COLOR_NORMALIZED).to(device)
        if param == "fourier":
            freqs = _rfft2d_freqs(size, size)
            # 1/f amplitude: lucent fft_image with decay_power=1; Lucid's division of the image by 4 done
            # here (the same numbers: a power of two commutes exactly with the linear irfft)
            scale = 1.0 / np.maximum(freqs, 1.0 / size) / _FFT_MAGIC
            self.scale = torch.from_numpy(scale.astype(np.float32))[None, None, :, :, None].to(device)
            self.shape: tuple[int, ...] = (self.channels, *freqs.shape, 2)
        else:
            self.shape = (self.channels, size, size)
            w = math.exp(-1 / (2 * _BLUR_SIGMA**2))
            self.blur = torch.tensor([w, 1.0, w], device=device) / (1 + 2 * w)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        return (rng.standard_normal(self.shape) * _INIT_SD).astype(np.float32)

    def __call__(self, p: Tensor) -> Tensor:
        if self.param == "fourier":
            spectrum = torch.view_as_complex((self.scale * p).contiguous())
            x = torch.fft.irfftn(spectrum, s=(self.size, self.size), norm="ortho")
        else:
            x = p
        if self.color is not None:
            x = torch.matmul(self.color, x.flatten(2)).view_as(x)
        x = torch.sigmoid(x)
        if self.param == "pixel":
            c, k = self.channels, self.blur
            x = F.pad(x, (1, 1, 1, 1), mode="replicate")
            x = F.conv2d(x, k.view(1, 1, 1, 3).expand(c, 1, 1, 3), groups=c)
            x = F.conv2d(x, k.view(1, 1, 3, 1).expand(c, 1, 3, 1), groups=c)
        return x.expand(-1, 3, -1, -1)


def _rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of each ``rfft2`` coefficient of an ``h × w`` image (rows × (w // 2 + 1))."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def _transform_params(rng: np.random.Generator, steps: int, size: int) -> np.ndarray:
    """Per-step ``(row shift px, col shift px, scale, angle degrees)`` of one unit: float64[steps, 4]."""
    jitter = max(1, round(_JITTER_PER_128 * size / 128))
    shift = rng.integers(-jitter, jitter + 1, size=(steps, 2))
    scale = rng.choice(_SCALES, size=steps)
    angle = rng.choice(_ANGLES, size=steps)
    return np.column_stack([shift, scale, angle]).astype(np.float64)


def _augment(x: Tensor, params: Tensor) -> Tensor:
    """Jitter, scale and rotate each image of ``x`` by its own ``params`` [B, 4]; grey fill."""
    size = x.shape[-1]
    drow, dcol, scale, angle = params.unbind(1)
    rad = angle * (math.pi / 180)
    cos, sin = torch.cos(rad) / scale, torch.sin(rad) / scale
    # theta maps output to input coordinates in [-1, 1] (x = col, y = row); 1 px = 2 / size.
    theta = torch.stack(
        [
            torch.stack([cos, -sin, 2 * dcol / size], 1),
            torch.stack([sin, cos, 2 * drow / size], 1),
        ],
        1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # sample (x - 0.5) with zero padding: whatever comes from outside the image is grey
    return F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def _tv(x: Tensor) -> Tensor:
    """Total variation per image: mean absolute difference of row and column neighbours."""
    rows = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    cols = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return rows + cols


def _to_uint8(x: Tensor) -> Tensor:
    return (x.detach().clamp(0, 1) * 255).round()


def _optimize(
    image: _Image,
    objective: Callable[[Tensor, Tensor], Tensor],
    units: list[int],
    seed: int,
    steps: int,
    lr: float,
    transforms: bool,
    tv: float,
    l2: float,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chunk: images uint8[B, S, S, 3], start and final objectives float[B]."""
    inits, moves = [], []
    for u in units:
        rng = np.random.default_rng([seed, u])  # per-unit stream: chunking never changes a unit's image
        inits.append(image.init(rng))
        moves.append(_transform_params(rng, steps, image.size))
    p = torch.from_numpy(np.stack(inits)).to(device).requires_grad_(True)
    moves_t = torch.from_numpy(np.stack(moves)).float().to(device)  # [B, steps, 4]; MPS has no float64
    idx = torch.tensor(units, device=device)

    with torch.no_grad():
        start = objective(_to_uint8(image(p)) / 255, idx)
    adam = _Adam(p, lr)
    for step in range(steps):
        p.grad = None
        x = image(p)
        seen = _augment(x, moves_t[:, step]) if transforms else x
        # SUM over units: each image's gradient is exactly its own unit's gradient
        loss = -objective(seen, idx).sum()
        if tv:
            loss = loss + tv * _tv(x).sum()
        if l2:
            loss = loss + l2 * (x - 0.5).square().flatten(1).mean(1).sum()
        loss.backward()
        adam.step()
    with torch.no_grad():
        final_img = _to_uint8(image(p))
        final = objective(final_img / 255, idx)
    pixels = final_img.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
    return pixels, start.float().cpu().numpy(), final.float().cpu().numpy()


class _Adam:
    """Adam (Kingma & Ba 2015) on one tensor, as ``torch.optim.Adam`` with its defaults computes it.

    Element-wise, so batch elements never interact. Not ``torch.optim.Adam``: the first
    ``torch.optim.Optimizer`` of a process imports ``torch._dynamo`` (seconds on a small CPU). The
    update is torch's fused Adam kernel (``torch._fused_adam_``, what ``Adam(fused=True)`` calls: one
    pass instead of six, 3x faster on CPU), or, where that kernel is missing, the same formula
    written out (equal up to float rounding: ``sqrt(v) / sqrt(1 - b2^t)`` vs ``sqrt(v / (1 - b2^t))``).
    """

    def __init__(
        self, p: Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.p, self.lr, self.betas, self.eps = p, lr, betas, eps
        self.m = torch.zeros_like(p)
        self.v = torch.zeros_like(p)
        self.t = 0
        self.fused = _FUSED_ADAM is not None and p.dtype == torch.float32
        self.step_t = torch.zeros((), dtype=torch.float32, device=p.device)

    @torch.no_grad()
    def step(self) -> None:
        assert self.p.grad is not None
        b1, b2 = self.betas
        self.t += 1
        g = self.p.grad
        if self.fused:
            assert _FUSED_ADAM is not None
            self.step_t.fill_(self.t)
            try:
                _FUSED_ADAM(
                    [self.p],
                    [g],
                    [self.m],
                    [self.v],
                    [],
                    [self.step_t],
                    lr=self.lr,
                    beta1=b1,
                    beta2=b2,
                    weight_decay=0.0,
                    eps=self.eps,
                    amsgrad=False,
                    maximize=False,
                )
                return
            except (NotImplementedError, RuntimeError):  # no kernel for this device: the written-out form
                if self.t > 1:
                    raise  # the state was already advanced by the kernel; never mix the two
                self.fused = False
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v / (1 - b2**self.t)).sqrt_().add_(self.eps)
        self.p.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**self.t))


def _auto_chunk(forward: Callable[[Tensor], Tensor], size: int, device: torch.device) -> int:
    """Units per chunk: activation memory of one truncated forward × 4 (saved + grads) within a budget."""
    counted = [0]

    def count(module: torch.nn.Module, args: object, out: object) -> None:
        if isinstance(out, Tensor):
            counted[0] += out.numel()

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        with torch.no_grad():
            forward(torch.zeros(1, 3, size, size, device=device))
    finally:
        handle.remove()
    per_unit = max(1, 4 * 4 * (counted[0] + 4 * 3 * size * size))
    if device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] // 2
    else:
        budget = _CPU_BUDGET
    return int(max(1, min(_MAX_AUTO_CHUNK, budget // per_unit)))


# --- the atlas entry (issue 12: sitegen.analyses.registry) ------------------------------------------

KIND = "featvis"
Params = FeatVisSpec


@dataclass(frozen=True, slots=True)
class Result:
    """Optimized images of the first ``params.units`` shown units of each chosen layer."""

    size: int
    seed: int
    params: FeatVisSpec
    layers: tuple[FeatVis, ...]


def check(params: Params, layers: Sequence[LayerInfo], problem: Problem, network: str) -> None:
    if not isinstance(params.layers, str):
        pick_layers(params.layers, layers, problem, ("analyses", KIND, "layers"), network)


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    lm = ctx.loaded
    infos = pick_layers(params.layers, lm.layers, ctx.problem, ("analyses", KIND, "layers"), ctx.network)
    options = params.model_dump(exclude={"enabled", "layers", "units"})  # featvis()'s keyword options
    done = []
    for info in infos:
        units = ctx.shown.get(info.name, [])[: params.units]
        if units:
            done.append(featvis(lm, info, units, seed=ctx.seed, device=ctx.device, **options))
    if not done:
        return None
    return Result(size=int(params.size or lm.input_size), seed=ctx.seed, params=params, layers=tuple(done))


def save(ctx: Context, result: Result, out: Path) -> FeatVisDoc:
    """``featvis/<layer>/unit-0007.webp`` per unit and the document."""
    layers = {}
    for vis in result.layers:
        for u, img in zip(vis.units.tolist(), vis.images, strict=True):
            codecs.write_webp(out / FeatVisDoc.image(vis.layer, u), img, quality=85)  # smooth: q70 bands
        layers[vis.layer] = FeatVisLayer(
            units=vis.units.tolist(),
            objective=rounded(vis.objective, 4),
            start_objective=rounded(vis.start_objective, 4),
        )
    p = result.params
    return FeatVisDoc(
        size=result.size,
        seed=result.seed,
        **p.model_dump(
            include={"steps", "lr", "param", "decorrelate", "grayscale", "transforms", "tv", "l2"}
        ),
        layers=layers,
    )
