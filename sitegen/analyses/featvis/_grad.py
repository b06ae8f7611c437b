"""Autograd for feature visualization: the forwards :func:`~sitegen.analyses.featvis.featvis` swaps in.

Lucid's redirected ReLU gradient (:class:`_RedirectedReLU`, installed on every ``nn.ReLU`` by
:func:`_redirected_relus`), the own-channel shortcut for a conv target (:class:`_OwnChannel`,
:func:`_conv_channel`) and max-pooling in each direction's faster memory layout (:class:`_MaxPool`,
:func:`_fast_max_pools`). Each is exact up to float rounding (the package docstring, "Speed").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sitegen.analyses._hooks import StopForward, Truncated
from sitegen.errors import ModelError
from sitegen.models.types import LoadedModel


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
