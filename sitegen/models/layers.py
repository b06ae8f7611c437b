"""The layer table: friendly names from the literature ↔ module paths, output shapes, receptive fields.

One dummy forward (batch 1, no grad) with a hook on every module records which modules run, in what
order, and the shape of what they return. Names are then given from the network's *structure*, never
from its class name:

- **Plain convs** (a ``Conv2d`` whose ancestors are only ``Sequential``/``ModuleList``/``ModuleDict``
  containers, as in AlexNet, VGG, a ResNet stem) are named in call order. VGG style — ``conv1_1``,
  ``conv1_2``, ``conv2_1`` … with the block number going up after each pooling layer — when at least
  two pooling-separated blocks hold more than one conv (VGG-11 and up). Otherwise AlexNet style,
  ``conv1`` … ``convN`` (AlexNet itself has one such block: conv3–conv5).
- A conv's (or linear's) layer is the output of the activation that follows it (BatchNorm, Dropout
  and Identity in between are skipped), as in the literature's "conv5" = after ReLU; when no
  activation module follows (functional ``F.relu``, or one ReLU module shared by several layers) it
  is the conv's own output.
- **Fully connected layers** of a net without blocks are ``fc{n}``, numbered on from the convs:
  AlexNet-style ``fc{convs + 1}`` (5 convs → fc6), VGG-style ``fc{conv blocks + 1}`` (5 blocks → fc6),
  so VGG-16/19 still have fc6..fc8.
- **Blocks** are modules other than containers that hold a conv (a ResNet ``BasicBlock``, an
  Inception module). When their containers are several (ResNet ``layer1``..``layer4``) each container
  is one layer, kind ``"block"``; otherwise each outermost block is. Blocks and the linears of a net
  with blocks are named by their module path (``layer2``, ``fc``); ``layer1.0`` and any other module
  path can be listed explicitly.
- ``prob`` is the softmax of the model's output: module path ``""``, kind ``"prob"``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from sitegen.errors import ModelError
from sitegen.models.types import LayerInfo
from sitegen.receptive_field import RF, receptive_fields

logger = logging.getLogger(__name__)

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_POOLS = (
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LPPool2d,
)
#: The activation modules that end a conv/linear layer (all pointwise: :mod:`sitegen.analyses._crop`
#: counts them among the modules that keep receptive-field crops exact).
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
)
# between a conv/linear and its activation: these do not end the layer
_PASS_THROUGH = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.Dropout, nn.Identity)


@dataclass(frozen=True, slots=True)
class _Call:
    path: str
    module: nn.Module
    shape: tuple[int, ...] | None  # output without the batch axis; None when not a tensor
    order: int  # completion order of the LAST call (a module run twice keeps its second output)
    count: int


@dataclass(frozen=True, slots=True)
class _Named:
    name: str
    path: str
    kind: str


def layer_table(
    module: nn.Module, input_size: int, layers: str | Sequence[str] = "auto"
) -> tuple[LayerInfo, ...]:
    """Resolve the layers to map, with output shapes and receptive fields.

    Args:
        module: the network (its mode is restored afterwards; the dummy forward runs in eval mode).
        input_size: side of the square input in pixels.
        layers: ``"auto"`` (the classic set: each conv after its ReLU, each fc layer, ``prob``; ResNet
            stages) or friendly names and/or module paths, e.g. ``["conv5", "features.11", "prob"]``.

    Returns:
        The layers in forward order (``prob`` last); a module path that has a friendly name gets it.

    Raises:
        ModelError: an unknown layer (with the closest valid name), a layer listed twice, or an input
            size the network cannot take.

    Example:
        >>> import torchvision
        >>> [l.name for l in layer_table(torchvision.models.alexnet(), 224)]  # doctest: +SKIP
        ['conv1', 'conv2', 'conv3', 'conv4', 'conv5', 'fc6', 'fc7', 'fc8', 'prob']
    """
    calls = _record_calls(module, input_size)
    output = calls.pop("")
    named = _auto_names(module, calls)
    if output.shape is not None and len(output.shape) == 1:
        named.append(_Named("prob", "", "prob"))
    if layers == "auto":
        chosen = named
    elif isinstance(layers, str):
        raise ModelError(f"layers: expected 'auto' or a list of names, got {layers!r}")
    else:
        chosen = _select(list(layers), named, calls, module)
    try:
        rfs = receptive_fields(module, input_size)
    except ModelError as e:
        # the table is still useful without RFs: patches then show whole images, as fc layers do
        logger.warning("%s; every unit gets the whole input as its receptive field", e)
        rfs = {}
    whole = RF(input_size, input_size, (input_size - 1) / 2)
    table = []
    for n in chosen:
        call = output if n.path == "" else calls[n.path]
        assert call.shape is not None  # _auto_names and _select only keep tensor outputs
        rf = rfs.get(n.path, whole)
        table.append(
            LayerInfo(n.name, n.path, n.kind, call.shape, call.shape[0], rf.size, rf.stride, rf.offset)
        )
    return tuple(table)


def _record_calls(module: nn.Module, input_size: int) -> dict[str, _Call]:
    """Run one dummy forward and record every module call (root included, as ``""``)."""
    seen: dict[str, _Call] = {}
    counter = [0]

    def hook(path: str) -> Callable[[nn.Module, object, object], None]:
        def fn(m: nn.Module, args: object, out: object) -> None:
            shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
            prev = seen.get(path)
            seen[path] = _Call(path, m, shape, counter[0], (prev.count if prev else 0) + 1)
            counter[0] += 1

        return fn

    param = next(module.parameters(), None)
    x = torch.zeros(
        1,
        3,
        input_size,
        input_size,
        device=param.device if param is not None else "cpu",
        dtype=param.dtype if param is not None else torch.float32,
    )
    handles = [m.register_forward_hook(hook(p)) for p, m in module.named_modules()]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(x)
    except (RuntimeError, ValueError) as e:
        raise ModelError(
            f"a {input_size}x{input_size} px input does not fit {type(module).__name__} "
            f"({type(e).__name__}: {str(e).splitlines()[0]}); use a larger image_size"
        ) from e
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    if "" not in seen or seen[""].shape is None:
        raise ModelError(f"{type(module).__name__} must return one tensor of class scores")
    return seen


def _parent(path: str) -> str:
    return path.rpartition(".")[0]


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _auto_names(module: nn.Module, calls: dict[str, _Call]) -> list[_Named]:
    """The classic layer set in forward order (without ``prob``)."""
    modules = dict(module.named_modules())

    def has_conv(path: str) -> bool:
        return any(isinstance(m, nn.Conv2d) for m in modules[path].modules())

    def is_block(path: str) -> bool:
        m = modules[path]
        return not isinstance(m, (_CONTAINERS, nn.Conv2d)) and has_conv(path)

    def in_block(path: str) -> bool:
        return any(not isinstance(modules[a], _CONTAINERS) for a in _ancestors(path))

    live = sorted((c for c in calls.values() if c.shape is not None), key=lambda c: c.order)
    blocks = [c for c in live if is_block(c.path) and not in_block(c.path)]
    # the sequence a reader follows: leaf modules outside blocks, and whole outermost blocks
    events = [c for c in live if (not list(c.module.children()) and not in_block(c.path)) or c in blocks]

    named: list[tuple[int, _Named]] = []
    used: set[str] = set()

    def add(name: str, call: _Call, kind: str) -> None:
        if name in used:  # e.g. a block path that equals a generated conv name
            name = call.path
        if name in used:
            return
        used.add(name)
        named.append((call.order, _Named(name, call.path, kind)))

    # plain convs and linears: VGG naming when >= 2 pooling-separated runs hold several convs
    multi, run = 0, 0
    for e in events:
        if isinstance(e.module, nn.Conv2d):
            run += 1
        elif isinstance(e.module, _POOLS) or e in blocks:
            multi += run > 1
            run = 0
    vgg = multi + (run > 1) >= 2

    block_no, in_block_no, conv_blocks, conv_no = 1, 0, 0, 0
    linears: list[tuple[_Call, _Call]] = []  # (the Linear, its layer output)
    for i, e in enumerate(events):
        if isinstance(e.module, nn.Conv2d):
            conv_no += 1
            in_block_no += 1
            conv_blocks += in_block_no == 1
            add(
                f"conv{block_no}_{in_block_no}" if vgg else f"conv{conv_no}", _layer_output(events, i), "conv"
            )
        elif isinstance(e.module, _POOLS) and in_block_no:
            block_no, in_block_no = block_no + 1, 0
        elif isinstance(e.module, nn.Linear):
            linears.append((e, _layer_output(events, i)))

    first_fc = (conv_blocks if vgg else conv_no) + 1
    for j, (linear, out) in enumerate(linears):
        add(linear.path if blocks else f"fc{first_fc + j}", out, "linear")

    # blocks: one layer per container of blocks when there are several containers (ResNet stages)
    containers = []
    for b in blocks:
        parent = _parent(b.path)
        if parent and parent not in containers:
            containers.append(parent)
    if len(containers) >= 2:
        for c in containers:
            add(c, calls[c], "block")
        for b in blocks:
            if not _parent(b.path):
                add(b.path, b, "block")
    else:
        for b in blocks:
            add(b.path, b, "block")

    return [n for _, n in sorted(named, key=lambda t: t[0])]


def _layer_output(events: list[_Call], i: int) -> _Call:
    """The activation that ends the conv/linear ``events[i]``, else the conv/linear itself."""
    for e in events[i + 1 :]:
        if isinstance(e.module, _PASS_THROUGH):
            continue
        if isinstance(e.module, ACTIVATIONS) and e.count == 1 and e.shape == events[i].shape:
            return e
        break
    return events[i]


def _kind(call: _Call) -> str:
    if isinstance(call.module, nn.Conv2d):
        return "conv"
    if isinstance(call.module, nn.Linear):
        return "linear"
    if isinstance(call.module, _POOLS):
        return "pool"
    if list(call.module.children()):
        return "block"
    return "conv" if call.shape is not None and len(call.shape) == 3 else "linear"


def _select(
    wanted: list[str], named: list[_Named], calls: dict[str, _Call], module: nn.Module
) -> list[_Named]:
    by_name = {n.name: n for n in named}
    by_path = {n.path: n for n in named if n.path}
    paths = [p for p, c in calls.items() if c.shape is not None]
    chosen: dict[str, _Named] = {}
    problems = []
    for w in wanted:
        if w in by_name:
            n = by_name[w]
        elif w in by_path:
            n = by_path[w]
        elif w in paths:
            n = _Named(w, w, _kind(calls[w]))
        else:
            problems.append(_unknown_layer(w, [n.name for n in named], paths, module))
            continue
        if n.path in chosen:
            problems.append(f"layer {w!r} is listed twice (as {chosen[n.path].name!r} and {w!r})")
            continue
        chosen[n.path] = n
    if problems:
        raise ModelError("; ".join(problems))
    order = {p: c.order for p, c in calls.items()}
    return sorted(chosen.values(), key=lambda n: order.get(n.path, len(order)))


def _unknown_layer(w: str, names: list[str], paths: list[str], module: nn.Module) -> str:
    all_paths = {p for p, _ in module.named_modules() if p}
    if w in all_paths:
        return f"layer {w!r} is a module that does not run (or returns no tensor) in eval mode"
    close = difflib.get_close_matches(w, names + paths, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown layer {w!r}{hint}; layers: {', '.join(names)}, or a module path such as "
        f"{paths[0] if paths else '...'} (`sitegen layers` lists them)"
    )
