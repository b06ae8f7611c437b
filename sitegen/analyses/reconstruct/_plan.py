"""Which pairs run how: a layer's module path, and whether its pairs can run on receptive-field crops.

:func:`_resolve` turns a layer name into its module path; :class:`_Planner` traces one forward per
input size and plans each layer (:class:`_Plan`): a croppable chain of conv/pool/pointwise modules
(:func:`_chain`; its receptive-field spans from :mod:`sitegen.analyses._crop`), or whole images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sitegen.analyses import _crop, _hooks
from sitegen.errors import ModelError
from sitegen.models import LoadedModel


def _resolve(model: nn.Module | LoadedModel, layer: str) -> tuple[str, bool]:
    """(module path, softmax?) for a layer name or module path."""
    if isinstance(model, LoadedModel):
        try:
            info = model.layer(layer)
        except KeyError:
            names = ", ".join(i.name for i in model.layers)
            raise ModelError(f"no layer {layer!r} in {model.arch}; layers: {names}") from None
        _hooks.get_module(model.module, info.module)
        return info.module, info.kind == "prob"
    _hooks.get_module(model, layer)
    return layer, False


@dataclass(frozen=True, slots=True)
class _Plan:
    """How pairs of one layer are computed: on crops of a chain (``spatial`` modules and spans) or whole."""

    out_shape: tuple[int, ...]
    spatial: tuple[nn.Module, ...] | None = None
    rows: _crop.Span | None = None
    cols: _crop.Span | None = None
    # every leaf module of the chain, input to layer, and each one's input (height, width)
    chain: tuple[nn.Module, ...] | None = None
    sizes: tuple[tuple[int, int], ...] | None = None


class _Planner:
    """Plans for the layers of one model from ONE traced forward per input size (shared by layers).

    The trace stops once every module in ``paths`` has run (default: runs the whole model).
    """

    def __init__(self, model: nn.Module, *, crop: bool, paths: Sequence[str] = ()) -> None:
        self.model = model
        self.crop = crop
        self.stops = [_hooks.get_module(model, p) for p in dict.fromkeys(paths)]
        self._traces: dict[tuple[int, int], tuple[Tensor, list[_hooks.Step], dict[str, Tensor]]] = {}
        self._plans: dict[tuple[str, bool, int, int], _Plan] = {}

    def plan(self, path: str, softmax: bool, images: Tensor) -> _Plan:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        key = (path, softmax, *size)
        if key not in self._plans:
            x, steps, outputs = self._trace(images)
            if path not in outputs:  # not among the modules the trace stopped after: trace it all
                self.stops = []
                del self._traces[size]
                x, steps, outputs = self._trace(images)
            out = outputs[path]
            if not isinstance(out, Tensor):
                raise ModelError(f"the output of module {path!r} is not a single tensor")
            shape = tuple(out.shape[1:])
            spatial = None
            if self.crop and out.dim() == 4 and not softmax:
                spatial = _chain(steps, x, out)
            if spatial is None:
                self._plans[key] = _Plan(shape)
            else:
                rows, cols = _crop.chain_spans(spatial)
                convs = tuple(m for m in spatial if isinstance(m, _crop.SPATIAL))
                sizes = tuple(
                    (int(step.inputs[0].shape[-2]), int(step.inputs[0].shape[-1]))
                    for step in steps[: len(spatial)]
                )
                self._plans[key] = _Plan(shape, convs, rows, cols, tuple(spatial), sizes)
        return self._plans[key]

    def _trace(self, images: Tensor) -> tuple[Tensor, list[_hooks.Step], dict[str, Tensor]]:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if size not in self._traces:
            with torch.inference_mode(False):  # a normal tensor: the chain check reads version counters
                x = images[:1].detach().clone()
            with (
                torch.inference_mode(False),
                torch.no_grad(),
                _hooks.truncated(self.model, None, "gradient", trace=True) as fwd,
                _hooks.stop_after(self.stops),
            ):
                fwd.run(x)
                self._traces[size] = (x, list(fwd.steps), dict(fwd.outputs))
        return self._traces[size]


def _chain(steps: Sequence[_hooks.Step], x: Tensor, out: Tensor) -> list[nn.Module] | None:
    """The leaf modules from the input to ``out`` when they form a croppable chain, else None.

    A chain: each leaf's only input is the previous leaf's output object, unmodified since (no
    functional op in between), the last one's output is ``out``, and every leaf is a conv/pool with
    zero padding or a pointwise module (BatchNorm and Dropout in eval mode only).
    """
    end = next((i for i, step in enumerate(steps) if step.output is out), None)
    if end is None:
        return None
    prev: Any = x
    version = x._version
    modules: list[nn.Module] = []
    for step in steps[: end + 1]:
        if len(step.inputs) != 1 or step.inputs[0] is not prev or step.input_versions[0] != version:
            return None
        m = step.module
        if isinstance(m, _crop.SPATIAL):
            if _crop.module_geometry(m) is None:
                return None
        elif isinstance(m, _crop.POINTWISE):
            if m.training and isinstance(m, nn.BatchNorm2d | nn.Dropout | nn.Dropout2d | nn.AlphaDropout):
                return None
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is None:
                return None
        else:
            return None
        if not isinstance(step.output, Tensor):
            return None
        prev, version = step.output, step.output_version
        modules.append(m)
    return modules
