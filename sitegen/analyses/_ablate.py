"""Unit ablation (Bau et al. 2020, PNAS, "Understanding the role of individual units"): zero one unit
of a layer, rerun the network from that layer on, and read the logits.

The network is cut at the layer's module with ``torch.fx`` (the module is kept as one leaf call, so a
ResNet block is cut at its output): the *prefix* runs once per batch of images and returns every
value the rest of the graph needs (the layer's output first, then any value that crosses the cut,
e.g. a skip connection); the *remainder* runs from those values, once per group of ablated units.
Each forward of the remainder takes ``G x B`` rows: B images repeated for G units, row block ``g``
with unit ``units[g]`` zeroed (``output[:, j] = 0``: a conv channel at every position, or a linear
neuron). A model ``torch.fx`` cannot trace runs whole instead, with :func:`zero_rows` (a forward
hook) doing the zeroing: the same numbers, at the price of the prefix per group.

:func:`zeroed` is the reference: a forward hook that zeroes units of a module's output for a plain
forward of the whole network (the tests check the split path against it, and both against a network
with the unit's weights zeroed, in float64).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx, nn

from sitegen.analyses._hooks import forward_hook, get_module

__all__ = ["Split", "ablate", "split_at", "zero_rows", "zeroed"]


@contextmanager
def zeroed(module: nn.Module, units: Sequence[int]) -> Iterator[None]:
    """Within the block, ``module``'s output has ``units`` set to 0 (``output[:, j] = 0``)."""
    index = list(units)

    def hook(_m: nn.Module, _args: tuple[Any, ...], out: Tensor) -> Tensor:
        out = out.clone()
        out[:, index] = 0
        return out

    with forward_hook(module, hook):
        yield


@contextmanager
def zero_rows(module: nn.Module, units: Sequence[int], block: int) -> Iterator[None]:
    """Within the block, rows ``g * block .. (g + 1) * block`` of ``module``'s output have unit
    ``units[g]`` set to 0: one forward ablates ``len(units)`` units of ``block`` images each."""

    def hook(_m: nn.Module, _args: tuple[Any, ...], out: Tensor) -> Tensor:
        out = out.clone()
        _zero_blocks(out, units, block)
        return out

    with forward_hook(module, hook):
        yield


def _zero_blocks(x: Tensor, units: Sequence[int], block: int) -> None:
    for g, u in enumerate(units):
        x[g * block : (g + 1) * block, u] = 0


class _Tracer(fx.Tracer):
    """The default tracer, with the cut module kept as one call (a block's inside is not inlined)."""

    def __init__(self, leaf: str) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name == self.leaf or super().is_leaf_module(m, module_qualified_name)


@dataclass(frozen=True)
class Split:
    """A network cut after one module: ``prefix(x)`` -> the values at the cut (the module's output
    first), ``rest(values, units, block)`` -> logits with ``units[g]`` zeroed in row block ``g``."""

    prefix: Callable[[Tensor], tuple[Tensor, ...]]
    rest: Callable[[tuple[Tensor, ...], Sequence[int], int], Tensor]
    traced: bool  # False: every call runs the whole network (no torch.fx trace)


def split_at(model: nn.Module, path: str) -> Split:
    """Cut ``model`` after the module at ``path`` (a ``named_modules()`` path, called once)."""
    module = get_module(model, path)
    try:
        graph = _Tracer(path).trace(model)
    except Exception:  # noqa: BLE001 - data-dependent control flow etc.: run the whole network
        return _whole(model, module)
    nodes = list(graph.nodes)
    calls = [n for n in nodes if n.op == "call_module" and n.target == path]
    if len(calls) != 1:
        return _whole(model, module)
    cut = nodes.index(calls[0])
    before = set(nodes[: cut + 1])
    crossing = [
        n for n in nodes[: cut + 1] if n.op != "get_attr" and n is not calls[0] and set(n.users) - before
    ]
    live = [calls[0], *crossing]
    pre = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for n in nodes[: cut + 1]:
        env[n] = pre.node_copy(n, lambda a: env[a])
    pre.output(tuple(env[n] for n in live))
    post = fx.Graph()
    env = {n: post.placeholder(f"live_{i}") for i, n in enumerate(live)}

    def arg(a: fx.Node) -> fx.Node:
        if a not in env:  # a parameter read before the cut (get_attr) and used after it
            env[a] = post.node_copy(a, arg)
        return env[a]

    for n in nodes[cut + 1 :]:
        if n.op == "output":
            post.output(fx.map_arg(n.args[0], arg))
        else:
            env[n] = post.node_copy(n, arg)
    prefix_gm = fx.GraphModule(model, pre)
    rest_gm = fx.GraphModule(model, post)

    def prefix(x: Tensor) -> tuple[Tensor, ...]:
        return tuple(prefix_gm(x))

    def rest(values: tuple[Tensor, ...], units: Sequence[int], block: int) -> Tensor:
        g = max(len(units), 1)
        rows = [v.repeat(g, *([1] * (v.dim() - 1))) for v in values]  # fresh copies: in-place safe
        _zero_blocks(rows[0], units, block)
        return rest_gm(*rows)

    return Split(prefix, rest, traced=True)


def _whole(model: nn.Module, module: nn.Module) -> Split:
    def prefix(x: Tensor) -> tuple[Tensor, ...]:
        return (x,)

    def rest(values: tuple[Tensor, ...], units: Sequence[int], block: int) -> Tensor:
        x = values[0]
        rows = x.repeat(max(len(units), 1), *([1] * (x.dim() - 1)))
        with zero_rows(module, units, block):
            return model(rows)

    return Split(prefix, rest, traced=False)


@dataclass(frozen=True, slots=True)
class Ablated:
    """True-class logits and correctness, intact and with each unit zeroed."""

    base_logit: np.ndarray  # float64 [N]
    base_correct: np.ndarray  # bool [N]
    logit: np.ndarray  # float64 [U, N]
    correct: np.ndarray  # bool [U, N]


def ablate(
    split: Split,
    images: Tensor,
    labels: np.ndarray,
    units: Sequence[int],
    *,
    batch_rows: int = 256,
    progress: Callable[[int, int], None] = lambda _d, _n: None,
) -> Ablated:
    """Zero each of ``units`` in turn on normalized ``images`` ``[N, 3, H, W]`` (labels ``[N]``).

    Images go ``B = min(N, batch_rows)`` at a time through the prefix (once), then
    ``G = batch_rows // B`` units at a time through the remainder.
    """
    n, units = len(images), list(units)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=images.device)
    block = max(1, min(n, batch_rows))
    group = max(1, batch_rows // block)
    base_logit, base_correct = np.zeros(n), np.zeros(n, dtype=bool)
    logit, correct = np.zeros((len(units), n)), np.zeros((len(units), n), dtype=bool)
    steps = -(-n // block) * (1 + -(-len(units) // group))
    done = 0
    with torch.inference_mode():
        for start in range(0, n, block):
            x, yb = images[start : start + block], y[start : start + block]
            b = len(x)
            values = split.prefix(x)
            z = split.rest(values, [], b)
            base_logit[start : start + b], base_correct[start : start + b] = _read(z, yb)
            done += 1
            progress(done, steps)
            for g0 in range(0, len(units), group):
                us = units[g0 : g0 + group]
                z = split.rest(values, us, b).reshape(len(us), b, -1)
                for k in range(len(us)):
                    t, c = _read(z[k], yb)
                    logit[g0 + k, start : start + b], correct[g0 + k, start : start + b] = t, c
                done += 1
                progress(done, steps)
    return Ablated(base_logit, base_correct, logit, correct)


def _read(z: Tensor, y: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The true-class logit and whether the top class is the true one, per row of ``z`` ``[B, K]``."""
    true = z.gather(1, y[:, None])[:, 0]
    return true.double().cpu().numpy(), (z.argmax(1) == y).cpu().numpy()
