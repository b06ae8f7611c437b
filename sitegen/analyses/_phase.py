"""Strided convolutions' input gradient by phases: a faster ``conv_transpose2d`` and the hook that
routes a conv's backward through it (reconstructions and feature visualization, which differentiate
w.r.t. the image only)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sitegen.analyses._hooks import _pair

__all__ = ["phase_backward"]


class _PhaseConvGrad(torch.autograd.Function):
    """Identity on a strided conv's output whose backward gives the conv's input gradient by phases.

    oneDNN's transposed convolution (the input gradient) is slow for a large stride (alexnet's
    conv1: 11x11, stride 4, into 3 channels). The same sum is a stride-1 convolution of the output
    gradient into ``C_in * s * s`` channels with a ``ceil(k / s)`` kernel, one channel per (input
    channel, row phase, col phase), then a pixel shuffle: about 3x faster, equal up to float rounding
    (the products are summed in another order).
    """

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, out: Tensor, weight: Tensor, stride: int, padding: tuple[int, int]
    ) -> Tensor:
        ctx.geometry = (tuple(x.shape[-2:]), stride, padding)
        ctx.save_for_backward(weight)
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (weight,) = ctx.saved_tensors
        (height, width), s, (ph, pw) = ctx.geometry
        return _phase_conv_transpose(grad, weight, s, ph, pw, height, width), None, None, None, None


def _phase_conv_transpose(
    grad: Tensor, weight: Tensor, s: int, ph: int, pw: int, height: int, width: int
) -> Tensor:
    """``conv_transpose2d(grad, weight, stride=s, padding=(ph, pw))`` cut to ``height x width``, by phases."""
    c_out, c_in, kh, kw = weight.shape
    qh, qw = -(-kh // s), -(-kw // s)
    wp = F.pad(weight, (0, qw * s - kw, 0, qh * s - kh))  # tap ky = s * q + a
    wp = wp.reshape(c_out, c_in, qh, s, qw, s).permute(1, 3, 5, 0, 2, 4).flip(-2, -1)
    wp = wp.reshape(c_in * s * s, c_out, qh, qw).contiguous()
    out = F.conv2d(grad, wp, padding=(qh - 1, qw - 1))
    out = F.pixel_shuffle(out, s)  # row s * m + a of the padded input
    short_h, short_w = max(0, ph + height - out.shape[-2]), max(0, pw + width - out.shape[-1])
    if short_h or short_w:  # trailing input rows/cols no window reads: zero gradient
        out = F.pad(out, (0, short_w, 0, short_h))
    return out[..., ph : ph + height, pw : pw + width]


def _phase_ok(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv2d)
        and m.groups == 1
        and m.padding_mode == "zeros"
        and not isinstance(m.padding, str)
        and _pair(m.dilation) == (1, 1)
        and _pair(m.stride)[0] == _pair(m.stride)[1] > 1
    )


@contextmanager
def phase_backward(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Compute the input gradient of each strided ``nn.Conv2d`` in ``modules`` by phases (see above).

    Only the gradient w.r.t. the conv's input goes through the replacement (its weight and bias get
    none): for reconstructions, which differentiate w.r.t. the image only.
    """

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        x = args[0] if args else None
        if not (torch.is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad and x.dim() == 4):
            return None
        assert isinstance(module, nn.Conv2d)
        assert not isinstance(module.padding, str)  # _phase_ok refuses 'same' / 'valid'
        pad = _pair(module.padding)
        return _PhaseConvGrad.apply(x, output.detach(), module.weight.detach(), _pair(module.stride)[0], pad)

    with ExitStack() as hooks:
        for m in dict.fromkeys(modules):
            if _phase_ok(m):
                hooks.callback(m.register_forward_hook(hook).remove)
        yield
