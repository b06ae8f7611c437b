"""Receptive fields derived from a model's own modules (pure geometry, no weights involved).

The model is traced once with ``torch.fx`` and every node's receptive field (RF) is propagated from the
input, per axis (row and col), with the usual recurrences (Araujo et al. 2019, "Computing Receptive
Fields of Convolutional Neural Networks", Distill):

    size_out  = size_in + (k - 1) * dilation * jump_in
    jump_out  = jump_in * stride
    start_out = start_in - pad * jump_in           (first input pixel read by unit 0; may be < 0)

so that ``offset = start + (size - 1) / 2`` is the centre of unit 0 and unit ``(row, col)`` is
centred at ``(offset + row * stride, offset + col * stride)``; this matches
``offset_out = offset_in + ((k - 1) * dilation / 2 - pad) * jump_in``.

Conventions (what the recurrences leave open):

- Conv2d, MaxPool2d, AvgPool2d (modules or ``F.*`` functions) and zero padding (``F.pad``,
  ``nn.ZeroPad2d``) follow the recurrences above; padding is assumed to read zeros.
- Element-wise ops, BatchNorm, ReLU, Dropout, channel concatenation and reshapes that keep the two
  last axes keep the RF. Several inputs (a residual ``add``, an Inception ``cat``) give the bounding
  box of their RFs (their union), the largest jump.
- An input that is broadcast from 1×1 onto a larger map (a squeeze-and-excitation gate) is ignored:
  its influence is global by construction and would make every later RF the whole image.
- ``AdaptiveAvgPool2d``/``AdaptiveMaxPool2d`` are exact when the input side is a multiple of the output
  side (``k = stride = in // out``, 7×7 → 7×7 in VGG-16 at 224 px is the identity); otherwise, and
  after anything that leaves the image plane (flatten, Linear, softmax, global pooling to 1×1, an
  unknown op that changes the spatial size), a unit sees the **whole input**: ``size = stride =
  input_size``, ``offset = (input_size - 1) / 2``. Later spatial ops keep it whole.
- Non-square kernels are tracked per axis and reported as one square RF at the end: the larger size
  and stride and the smaller start of the two axes (a box that contains both).
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from sitegen.errors import ModelError

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (top, left, bottom, right), bottom/right exclusive


@dataclass(frozen=True, slots=True)
class RF:
    """Receptive field of the units of one layer, in input pixels.

    Attributes:
        size: side of the square of input pixels that can influence one unit.
        stride: input pixels between the centres of neighbouring units (the "jump").
        offset: input coordinate of the centre of unit (0, 0); ``.5`` when ``size`` is even.
    """

    size: int
    stride: int
    offset: float


@dataclass(frozen=True, slots=True)
class _Axis:
    size: int
    jump: int
    start: int  # first input pixel (row or col) that unit 0 reads, padding included (may be negative)

    def window(self, k: int, stride: int, pad: int, dilation: int = 1) -> _Axis:
        return _Axis(
            self.size + (k - 1) * dilation * self.jump, self.jump * stride, self.start - pad * self.jump
        )


class _Global:
    """Marker: the unit sees the whole input."""

    def __repr__(self) -> str:
        return "GLOBAL"


GLOBAL = _Global()
_State = tuple[_Axis, _Axis] | _Global | None  # None: not image data (shapes, parameters, ints)


def receptive_fields(model: nn.Module, input_size: int) -> dict[str, RF]:
    """Receptive field of every module's output, from one ``torch.fx`` trace of the model.

    Args:
        model: the network; it is traced in eval mode and put back in its previous mode.
        input_size: side of the square input in pixels (adaptive pools and the "whole input" RF
            depend on it).

    Returns:
        ``{module path: RF}`` for every module called in ``forward`` (a module called twice keeps its
        last call), plus ``""`` for the model's output.

    Raises:
        ModelError: the model cannot be traced by ``torch.fx`` (data-dependent control flow).

    Example:
        >>> import torchvision
        >>> rf = receptive_fields(torchvision.models.alexnet(), 224)
        >>> rf["features.11"]  # conv5 after its ReLU
        RF(size=163, stride=16, offset=15.0)
    """
    was_training = model.training
    model.eval()  # batch-1 BatchNorm at 1×1 cannot run in training mode; `if self.training` branches
    try:
        tracer = _Tracer()
        try:
            graph = tracer.trace(model)
        except Exception as e:  # fx raises many types (TraceError, TypeError, RuntimeError...) on user code
            raise ModelError(
                f"cannot derive receptive fields: torch.fx cannot trace {type(model).__name__} "
                f"({type(e).__name__}: {e})"
            ) from e
        gm = fx.GraphModule(model, graph)
        param = next(model.parameters(), None)
        dummy = torch.zeros(
            1,
            3,
            input_size,
            input_size,
            device=param.device if param is not None else "cpu",
            dtype=param.dtype if param is not None else torch.float32,
        )
        with torch.no_grad():
            ShapeProp(gm).propagate(dummy)
    finally:
        model.train(was_training)

    states: dict[fx.Node, _State] = {}
    first_input = True
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            states[node] = (_Axis(1, 1, 0), _Axis(1, 1, 0)) if first_input else None
            first_input = False
        elif node.op == "output":
            states[node] = _union([state for _, state in _input_states(node, states)])
        else:
            states[node] = _node_state(node, gm, states)

    def rf(state: _State) -> RF:
        return _to_rf(state, input_size)

    out = {path: rf(states[proxy.node]) for path, proxy in tracer.outputs.items() if proxy.node in states}
    output = next(n for n in gm.graph.nodes if n.op == "output")
    out[""] = rf(states[output])
    return out


def unit_box(rf: RF, row: int, col: int, image_size: int | tuple[int, int] | None = None) -> Box:
    """The input pixels that can influence unit ``(row, col)``: a square of side ``rf.size``.

    The box is exact for even and odd sizes: its first row is ``offset + row * stride - (size - 1) / 2``
    (always a whole number) and it holds ``size`` rows. It is NOT clipped to the image (border units
    read padding): see :func:`clip_box`. Near the bottom/right edge the box may also hold pixels the
    layer never reads, when a floor-mode stride dropped the last row or column of an earlier map.

    Args:
        rf: the layer's receptive field.
        row: unit row in the layer's output map.
        col: unit column.
        image_size: optional image side (or ``(rows, cols)``); when given, a box that misses the image
            entirely raises ``ValueError`` — such a ``(row, col)`` is not a unit of this layer (swapped
            axes, wrong layer).

    Returns:
        ``(top, left, bottom, right)`` in input pixels, bottom/right exclusive.

    Example:
        >>> unit_box(RF(size=11, stride=4, offset=3.0), 0, 1)  # AlexNet conv1: padding 2
        (-2, 2, 9, 13)
    """
    half = (rf.size - 1) / 2
    top = round(rf.offset + row * rf.stride - half)
    left = round(rf.offset + col * rf.stride - half)
    box = (top, left, top + rf.size, left + rf.size)
    if image_size is not None:
        t, lf, b, r = clip_box(box, image_size)
        if t >= b or lf >= r:
            raise ValueError(f"unit ({row}, {col}) with {rf} lies outside a {image_size} px image")
    return box


def clip_box(box: Box, image_size: int | tuple[int, int]) -> Box:
    """Clip a box to the image: ``image_size`` is the side of a square image, or ``(rows, cols)``."""
    rows, cols = (image_size, image_size) if isinstance(image_size, int) else image_size
    top, left, bottom, right = box
    return (max(top, 0), max(left, 0), min(bottom, rows), min(right, cols))


# --- tracing -----------------------------------------------------------------------------------------


class _Tracer(fx.Tracer):
    """Records the proxy each module call returns, so blocks traced through (a ResNet ``BasicBlock``,
    a ``Sequential`` stage) get the RF of their output too, not only leaf modules."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: dict[str, fx.Proxy] = {}

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = super().call_module(m, forward, args, kwargs)
        if isinstance(out, fx.Proxy):
            try:
                self.outputs[self.path_of_module(m)] = out
            except NameError:  # a module built inside forward(): not a named submodule
                pass
        return out


def _input_states(node: fx.Node, states: dict[fx.Node, _State]) -> list[tuple[fx.Node, _State]]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return [(n, states.get(n)) for n in found if states.get(n) is not None]


def _metas(node: fx.Node) -> list[Any]:
    """ShapeProp's TensorMetadata of a node's output (one per tensor of a tuple output)."""
    meta = node.meta.get("tensor_meta")
    if meta is None:
        return []
    if hasattr(meta, "shape"):  # TensorMetadata is itself a NamedTuple: test it first
        return [meta]
    return list(meta) if isinstance(meta, (tuple, list)) else [meta]


def _spatial(node: fx.Node) -> tuple[int, int] | None:
    """The two last axes of a node's tensor output (rows, cols), ``None`` if it is not an image-like map.

    A tuple of maps (``chunk``, ``max_pool2d(return_indices=True)``) counts when all share one size.
    """
    metas = _metas(node)
    sizes = {tuple(m.shape[-2:]) for m in metas if hasattr(m, "shape") and len(m.shape) >= 4}
    if len(sizes) == 1 and all(hasattr(m, "shape") and len(m.shape) >= 4 for m in metas):
        return sizes.pop()  # type: ignore[return-value]
    return None


def _is_tensor(node: fx.Node) -> bool:
    metas = _metas(node)
    return bool(metas) and all(hasattr(m, "shape") for m in metas)


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window(state: _State, k: Any, stride: Any, pad: Any, dilation: Any = 1) -> _State:
    if not isinstance(state, tuple):
        return state
    k2, s2, d2 = _pair(k), _pair(stride if stride else k), _pair(dilation)
    if isinstance(pad, str):  # Conv2d padding="same" pads d*(k-1)//2 before, "valid" none
        p2 = tuple(d * (kk - 1) // 2 for kk, d in zip(k2, d2, strict=True)) if pad == "same" else (0, 0)
    else:
        p2 = _pair(pad)
    return (state[0].window(k2[0], s2[0], p2[0], d2[0]), state[1].window(k2[1], s2[1], p2[1], d2[1]))


def _adaptive(state: _State, node: fx.Node) -> _State:
    src = node.args[0]
    sizes_in = _spatial(src) if isinstance(src, fx.Node) else None
    sizes_out = _spatial(node)
    if not isinstance(state, tuple) or sizes_in is None or sizes_out is None:
        return GLOBAL if state is not None else None
    if sizes_out == (1, 1) and sizes_in != (1, 1):
        return GLOBAL  # global pooling: every unit sees the whole image
    axes = []
    for axis, i, o in zip(state, sizes_in, sizes_out, strict=True):
        if i % o:
            return GLOBAL  # overlapping, uneven bins: no single stride describes them
        axes.append(axis.window(i // o, i // o, 0))
    return (axes[0], axes[1])


def _pad(state: _State, pad: Any) -> _State:
    if not isinstance(state, tuple):
        return state
    pad = _pair(pad) * 2 if isinstance(pad, int) else tuple(pad)
    left, top = pad[0], pad[2] if len(pad) > 2 else 0
    rows, cols = state
    return (
        _Axis(rows.size, rows.jump, rows.start - top * rows.jump),
        _Axis(cols.size, cols.jump, cols.start - left * cols.jump),
    )


def _arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _node_state(node: fx.Node, gm: fx.GraphModule, states: dict[fx.Node, _State]) -> _State:
    if node.op == "get_attr":
        return None
    inputs = _input_states(node, states)
    if not inputs:
        return None
    first = node.args[0] if node.args else None
    state = states.get(first) if isinstance(first, fx.Node) else None

    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        if isinstance(m, nn.Conv2d):
            return _window(state, m.kernel_size, m.stride, m.padding, m.dilation)
        if isinstance(m, nn.MaxPool2d):
            return _window(state, m.kernel_size, m.stride, m.padding, m.dilation)
        if isinstance(m, nn.AvgPool2d):
            return _window(state, m.kernel_size, m.stride, m.padding)
        if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            return _adaptive(state, node)
        if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)):
            return _pad(state, m.padding)
    elif node.op == "call_function":
        fn = node.target
        if fn in (F.conv2d, torch.conv2d):
            weight = _arg(node, 1, "weight")
            k = tuple(weight.meta["tensor_meta"].shape[-2:])
            return _window(
                state,
                k,
                _arg(node, 3, "stride", 1),
                _arg(node, 4, "padding", 0),
                _arg(node, 5, "dilation", 1),
            )
        if fn in (F.max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d):
            return _window(
                state,
                _arg(node, 1, "kernel_size"),
                _arg(node, 2, "stride"),
                _arg(node, 3, "padding", 0),
                _arg(node, 4, "dilation", 1),
            )
        if fn is F.avg_pool2d:
            return _window(
                state, _arg(node, 1, "kernel_size"), _arg(node, 2, "stride"), _arg(node, 3, "padding", 0)
            )
        if fn in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
            return _adaptive(state, node)
        if fn is F.pad and _arg(node, 2, "mode", "constant") == "constant":
            return _pad(state, _arg(node, 1, "pad"))
        if fn is operator.getitem and isinstance(first, fx.Node) and _spatial(node) == _spatial(first):
            return state  # one map out of a tuple (chunk, split, max-pool indices)
    return _generic(node, inputs)


def _generic(node: fx.Node, inputs: list[tuple[fx.Node, _State]]) -> _State:
    """Any other op: keeps the RF when the two last axes are unchanged, else the whole input."""
    if not _is_tensor(node):
        return None  # x.size(), shapes, ints: not image data
    out = _spatial(node)
    if out is None:
        return GLOBAL  # flatten, Linear, mean over the image: left the image plane
    local = []
    for src, state in inputs:
        size = _spatial(src)
        if size == (1, 1) and out != (1, 1):
            continue  # a broadcast gate (squeeze-and-excitation): see the module docstring
        if size != out:
            logger.debug(
                "receptive field: %s changes the map %s -> %s: whole input", node.format_node(), size, out
            )
            return GLOBAL
        local.append(state)
    return _union(local) if local else GLOBAL


def _union(states: list[_State]) -> _State:
    """The bounding box of several inputs' RFs (a residual add, a concatenation)."""
    if any(isinstance(s, _Global) for s in states):
        return GLOBAL
    local = [s for s in states if isinstance(s, tuple)]
    if not local:
        return None
    axes = []
    for i in range(2):
        start = min(s[i].start for s in local)
        end = max(s[i].start + s[i].size for s in local)
        axes.append(_Axis(end - start, max(s[i].jump for s in local), start))
    return (axes[0], axes[1])


def _to_rf(state: _State, input_size: int) -> RF:
    if not isinstance(state, tuple):  # GLOBAL (or no image data at all): the whole input
        return RF(input_size, input_size, (input_size - 1) / 2)
    rows, cols = state
    size, stride, start = max(rows.size, cols.size), max(rows.jump, cols.jump), min(rows.start, cols.start)
    return RF(size, stride, start + (size - 1) / 2)
