"""The cone backward's records and per-module rules.

:class:`_Window` (a map's window at one chain module) and :class:`_ConePair` (one pair's windows);
a max-pool's switches, a conv's input gradient on a window (the flipped kernel for stride 1, phases
for strided convs), conv multiply-adds for the cost estimate, and which modules the cone supports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sitegen.analyses import _crop, _hooks, _phase


@dataclass(frozen=True, slots=True)
class _Window:
    """The signal's extent at one chain module in a cone backward (same for every pair of a group).

    ``height x width`` at the module's output; for a conv/pool, ``clip_top``/``clip_left`` rows/cols
    of its transposed output fall outside the input map (in its padding) and ``in_height x in_width``
    remain.
    """

    height: int
    width: int
    clip_top: int = 0
    clip_left: int = 0
    in_height: int = 0
    in_width: int = 0


@dataclass(slots=True)
class _ConePair:
    index: int  # the pair's position in the caller's order
    image: int  # its image among the forwarded ones
    unit: int
    shapes: tuple[_Window, ...]  # from the layer's module down to the first (see _Cone.windows)
    tops: list[int]  # the window's top-left at each chain module's output (and, last, at the input)
    lefts: list[int]


def _area(win: _Window) -> int:
    """Pixels of the window at the module's input."""
    return max(1, win.in_height * win.in_width if win.in_height else win.height * win.width)


def _switches(m: nn.MaxPool2d, x: Tensor) -> tuple[Tensor, Tensor]:
    """A max-pool's output and switches (the flat index of each window's first maximum in its map)."""
    return F.max_pool2d(  # type: ignore[call-overload,no-any-return]
        x, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode, return_indices=True
    )


def _conv_macs(m: nn.Conv2d) -> int:
    kh, kw = _hooks._pair(m.kernel_size)  # type: ignore[arg-type]
    return m.out_channels * (m.in_channels // m.groups) * kh * kw


def _conv_input_grad(signal: Tensor, m: nn.Conv2d, win: _Window, flipped: Tensor | None) -> Tensor:
    """The conv's input gradient for an output-gradient window, cut to the input window (see _Window).

    ``flipped``: for a stride-1 conv, its weight as the equivalent forward conv's (see :func:`_flipped`).
    """
    rows = slice(win.clip_top, win.clip_top + win.in_height)
    cols = slice(win.clip_left, win.clip_left + win.in_width)
    if flipped is not None:  # oneDNN's forward conv, channels_last: ~30 % faster than conv_transpose2d
        (kh, kw), _, _ = _crop.module_geometry(m) or ((1, 1), None, None)
        fmt = torch.channels_last if flipped.is_contiguous(memory_format=torch.channels_last) else None
        x = signal.contiguous(memory_format=fmt) if fmt is not None else signal
        full = F.conv2d(x, flipped, padding=(kh - 1, kw - 1), dilation=m.dilation, groups=m.groups)
        return full[..., rows, cols]
    weight = m.weight.detach()
    stride = _hooks._pair(m.stride)  # type: ignore[arg-type]
    if _phase._phase_ok(m):  # strided: a stride-1 conv plus a pixel shuffle (see _phase.phase_backward)
        return _phase._phase_conv_transpose(
            signal, weight, stride[0], win.clip_top, win.clip_left, win.in_height, win.in_width
        )
    full = F.conv_transpose2d(signal, weight, stride=stride, dilation=m.dilation, groups=m.groups)
    return full[..., rows, cols]


def _flipped(m: nn.Conv2d) -> Tensor | None:
    """A stride-1 conv's weight for the forward conv that computes its transposed conv (None if strided).

    ``conv_transpose2d(g, w) == conv2d(g, w', padding=extent - 1)`` with ``w'`` the kernel flipped and
    the in/out channels of each group swapped: ``[C_in, C_out / groups, kh, kw]``.
    """
    if _hooks._pair(m.stride) != (1, 1):  # type: ignore[arg-type]
        return None
    w = m.weight.detach()
    g = m.groups
    c_out, c_in_g, kh, kw = w.shape
    w = w.reshape(g, c_out // g, c_in_g, kh, kw).transpose(1, 2).reshape(g * c_in_g, c_out // g, kh, kw)
    w = w.flip(-2, -1)
    if g * c_in_g >= 8:  # channels_last: ~30 % faster on 2 cores; not for the 3-channel image gradient
        return w.contiguous(memory_format=torch.channels_last)
    return w.contiguous()


def _cone_supported(m: nn.Module) -> bool:
    """Whether the cone backward has ``m``'s rule (exact types: a subclass may change the forward)."""
    if type(m) is nn.Conv2d:
        return _crop.module_geometry(m) is not None
    if type(m) is nn.MaxPool2d:
        return not m.return_indices
    if isinstance(m, nn.ReLU):
        return type(m) is nn.ReLU
    if type(m) is nn.BatchNorm2d:
        return not m.training and m.running_var is not None
    return type(m) in (nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout) and not m.training
