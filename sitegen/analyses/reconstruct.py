"""Deconvnet, guided-backprop and gradient reconstructions of single units.

A reconstruction projects one unit's activation back to input pixels (Zeiler & Fergus 2013, section
2.1): the backward pass starts from the unit's activation at one position (every other activation of
the layer set to zero), max-pools route the signal by their forward switches, convolutions are applied
transposed, and the three methods differ only at the ReLUs:

- ``deconvnet`` (Zeiler & Fergus): ``relu(signal)``, whatever the sign of the forward input;
- ``guided`` (Springenberg et al. 2015): ``relu(signal)`` where the forward input was positive;
- ``gradient`` (Simonyan et al. 2014): the plain gradient, ``signal`` where the forward input was positive.

Autograd does the routing and the transposed convolutions; :mod:`sitegen.analyses._hooks` swaps the
ReLU backward (``nn.ReLU`` modules only: a functional ReLU raises ``ModelError`` for deconvnet/guided).
The backward is seeded with the unit's activation *value*, so a reconstruction equals captum's
``NeuronDeconvolution`` / ``NeuronGuidedBackprop`` / ``NeuronGradient`` (which seed with 1) times
that value: a strong activation projects to a strong picture.

Speed (shared/PERFORMANCE.md: captum took 22–29 ms per (unit, image) call on alexnet, mostly
computing what a single unit never sees):

- the forward stops at the target layer (the classifier is never run);
- many (unit, image) pairs share one forward/backward;
- a reconstruction is zero outside the unit's receptive field, so each pair runs on a crop of the
  input to that field (exact; see :mod:`sitegen.analyses._crop`), crops of one shape batched together
  (with many pairs, border crops are lengthened to a few shared shapes so that they batch). Crops
  need the network up to the target to be a chain of conv/pool/pointwise modules (checked on one
  traced forward per call); otherwise, and for linear/prob layers, the whole image is used;
- on a crop chain, a strided conv's input gradient (oneDNN's slow transposed conv, alexnet's conv1) is
  computed as a stride-1 conv plus a pixel shuffle (:func:`sitegen.analyses._hooks.phase_backward`:
  equal up to float rounding, about 3x faster for that conv).

benchmarks/reconstruct.py measures it (shared 2-core CPU): 14-19x captum per (unit, image) over a
whole alexnet atlas; vgg16's top-3 channels of 13 layers on one image 1.9-2.4x faster than one retained
forward plus one backward per feature.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sitegen.analyses import _crop, _hooks
from sitegen.errors import ModelError
from sitegen.models._api import LayerInfo, LoadedModel
from sitegen.receptive_field import RF, unit_box

__all__ = ["reconstruct", "reconstruct_topk", "to_display"]

Emit = Callable[[Tensor, Tensor, Sequence[int], Sequence[int]], None]

# Pairs per forward/backward at full image size; crops scale it by area (batch 16 beat 64 for VGG on a
# 2-core CPU, shared/PERFORMANCE.md).
DEFAULT_BATCH = 16
_MAX_CHUNK = 4096
# From this many pairs per layer on, border crops are rounded to shared lengths (see _Engine._quantum).
_BUCKET_MIN_PAIRS = 32


def reconstruct(
    model: nn.Module | LoadedModel,
    layer: str | Sequence[str],
    images: Tensor,
    units: Sequence[int] | Tensor,
    positions: Sequence[tuple[int, int]] | Tensor | None = None,
    method: str = "deconvnet",
    *,
    batch_size: int = DEFAULT_BATCH,
    crop: bool = True,
) -> Tensor:
    """Reconstruct one unit per image in input space.

    Element ``b`` is the reconstruction of unit ``units[b]`` of ``layer`` at ``positions[b]`` (or at
    its maximum over ``images[b]``): the backward pass is seeded with the unit's activation value
    there (zero elsewhere), so the result equals captum's neuron attribution (seed 1) times that
    value. (For a negative value, possible at a conv output before its ReLU, deconvnet and guided
    backprop are not sign-symmetric: the result is the reconstruction of the negative seed.)

    Args:
        model: the network (eval mode), or a :class:`~sitegen.models.LoadedModel`.
        layer: ``named_modules()`` path of the layer's module; for a ``LoadedModel`` also a friendly
            layer name (``conv5``, ``fc7``, ``prob``: the softmax of the output). A sequence gives
            one layer per element (one traced forward serves them all).
        images: ``[B, 3, H, W]`` on the model's device: the model's actual (normalized) inputs. The
            build normalizes first (``LoadedModel.normalize``), as reconstructions live in the space of
            the first conv's input (Zeiler & Fergus).
        units: ``B`` channel (conv) or neuron (linear, prob) indices.
        positions: ``B`` ``(row, col)`` positions in the layer's map, or None for each unit's argmax in
            its image (first maximum in row-major order). Ignored for linear and prob layers.
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        batch_size: (unit, image) pairs per forward/backward at full image size; receptive-field crops
            batch proportionally more.
        crop: compute on receptive-field crops where exact (the result is the same either way).

    Returns:
        ``[B, 3, H, W]``, zero outside each unit's receptive field.

    Raises:
        ModelError: unknown layer, a unit or position outside the layer, or a functional ReLU before
            the layer (deconvnet/guided need ``nn.ReLU`` modules).

    Example:
        >>> net = torchvision.models.alexnet().eval()
        >>> x = torch.randn(2, 3, 224, 224)
        >>> rec = reconstruct(net, "features.11", x, units=[7, 42])  # conv5 units at their maxima
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    n = images.shape[0]
    layers = [layer] * n if isinstance(layer, str) else list(layer)
    unit_t = torch.as_tensor(units, dtype=torch.long).reshape(-1)
    if unit_t.numel() != n or len(layers) != n:
        raise ValueError(f"got {unit_t.numel()} units and {len(layers)} layers for {n} images")
    pos = None if positions is None else torch.as_tensor(positions, dtype=torch.long).reshape(n, 2)
    module = model.module if isinstance(model, LoadedModel) else model
    planner = _Planner(module, crop=crop, paths=[_resolve(model, name)[0] for name in dict.fromkeys(layers)])
    with torch.inference_mode(False):  # written to below, outside inference mode
        canvas = torch.zeros(images.shape, dtype=images.dtype, device=images.device)
    for name in dict.fromkeys(layers):  # first-seen order
        path, softmax = _resolve(model, name)
        members = torch.tensor([i for i, lay in enumerate(layers) if lay == name])
        engine = _Engine(planner, path, method, softmax=softmax, batch_size=batch_size)
        sub_units = unit_t[members]
        if pos is None:
            rows, cols = engine.locate(images, members, sub_units)
        else:
            rows, cols = pos[members, 0], pos[members, 1]

        def paste(
            idx: Tensor, grads: Tensor, tops: Sequence[int], lefts: Sequence[int], members=members
        ) -> None:
            h, w = grads.shape[-2:]
            for q, i in enumerate(members[idx].tolist()):
                canvas[i, :, tops[q] : tops[q] + h, lefts[q] : lefts[q] + w] = grads[q]

        engine.run(images, members, sub_units, rows, cols, paste)
    return canvas


def reconstruct_topk(
    loaded: LoadedModel,
    images_by_index: Callable[[int], Tensor],
    layer: LayerInfo,
    topk: Any,
    units: Sequence[int],
    *,
    method: str = "deconvnet",
    batch_size: int = DEFAULT_BATCH,
    device: torch.device | str = "cpu",
    image_size: int | None = None,
    max_cell: int = 96,
) -> np.ndarray:
    """Reconstructions of each unit's top-k entries, as sprite tiles matching the patches.

    Each (unit, rank) entry of ``topk`` (duck-typed :class:`~sitegen.mine.LayerTopK`: ``images``,
    ``rows``, ``cols`` arrays ``[U, k]``, image -1 = empty) is reconstructed at its mined position,
    cut to the same receptive-field box as its patch (:func:`sitegen.analyses.patches.extract_patches`),
    contrast-normalized with :func:`to_display` and resized to the patch cell.

    Args:
        loaded: the network.
        images_by_index: probe index -> un-normalized ``[3, H, W]`` image in [0, 1]; normalized here.
        layer: the layer.
        topk: its mined top-k table.
        units: which units (rows of ``topk``) to reconstruct.
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        batch_size: pairs per backward at full image size (see :func:`reconstruct`).
        device: where to compute.
        image_size: image side in pixels (default: the model's input size).
        max_cell: cell side cap, as for the patches.

    Returns:
        uint8 ``[len(units), k, cell, cell, 3]``; empty entries are mid-grey.
    """
    path, softmax = _resolve(loaded, layer.module if layer.kind != "prob" else layer.name)
    size = int(image_size or loaded.input_size)
    k = int(np.asarray(topk.images).shape[1])
    cell = _crop.cell_size(_display_size(layer, size), max_cell)
    out = np.full((len(units), k, cell, cell, 3), 128, dtype=np.uint8)
    engine = _Engine(
        _Planner(loaded.module, crop=True, paths=[path]), path, method, softmax=softmax, batch_size=batch_size
    )
    dev = torch.device(device)
    # a block of units at a time keeps the distinct images in memory bounded (k images per unit)
    block = max(1, 256 // max(k, 1))
    for b0 in range(0, len(units), block):
        sel = [int(u) for u in units[b0 : b0 + block]]
        img_idx = np.asarray(topk.images)[sel]
        entries = [(j, r) for j in range(len(sel)) for r in range(k) if img_idx[j, r] >= 0]
        if not entries:
            continue
        wanted = sorted({int(img_idx[j, r]) for j, r in entries})
        slot = {idx: s for s, idx in enumerate(wanted)}
        batch = torch.stack([images_by_index(i) for i in wanted]).to(dev, torch.float32)
        batch = loaded.normalize(batch)
        image_of = torch.tensor([slot[int(img_idx[j, r])] for j, r in entries])
        unit_t = torch.tensor([sel[j] for j, _ in entries])
        rows_np, cols_np = np.asarray(topk.rows)[sel], np.asarray(topk.cols)[sel]
        rows = torch.tensor([int(rows_np[j, r]) for j, r in entries])
        cols = torch.tensor([int(cols_np[j, r]) for j, r in entries])
        if layer.kind in ("linear", "prob"):
            rows.zero_()
            cols.zero_()
        elif bool((rows < 0).any()):  # no mined position: recover the argmax
            r2, c2 = engine.locate(batch, image_of, unit_t)
            rows = torch.where(rows < 0, r2, rows)
            cols = torch.where(cols < 0, c2, cols)
        spatial = layer.kind not in ("linear", "prob")
        boxes = [
            _display_box(layer, int(rows[e]), int(cols[e])) if spatial else (0, 0, size, size)
            for e in range(len(entries))
        ]

        tile = functools.partial(_tile_into, out[b0 : b0 + len(sel)], entries, boxes, cell)
        engine.run(batch, image_of, unit_t, rows, cols, tile)
    return out


def to_display(rec: np.ndarray, peak: float | None = None) -> np.ndarray:
    """A reconstruction ``[3, h, w]`` as uint8 ``[h, w, 3]``, contrast-normalized around grey.

    As in Zeiler & Fergus's figures, each reconstruction is scaled on its own and symmetrically:
    ``x / (2 * max|x|) + 0.5``, so zero (no contribution, and everything outside the receptive
    field) is mid-grey, positive and negative signal brighten and darken each colour channel, and
    the strongest pixel reaches 0 or 255. ``peak`` overrides ``max|x|`` (e.g. the peak of the
    uncut reconstruction).
    """
    if peak is None:
        peak = float(np.abs(rec).max()) if rec.size else 0.0
    scaled = rec / (2 * peak) + 0.5 if peak > 0 else np.full_like(rec, 0.5)
    return np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


# --- internals ------------------------------------------------------------------------------------


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


def _display_size(layer: LayerInfo, image_size: int) -> int:
    return image_size if layer.kind in ("linear", "prob") else int(layer.rf_size)


def _display_box(layer: LayerInfo, row: int, col: int) -> tuple[int, int, int, int]:
    """The patch's box: the layer table's receptive field around (row, col), unclipped."""
    return unit_box(RF(layer.rf_size, layer.rf_stride, layer.rf_offset), row, col)


def _tile_into(
    out: np.ndarray,
    entries: Sequence[tuple[int, int]],
    boxes: Sequence[tuple[int, int, int, int]],
    cell: int,
    idx: Tensor,
    grads: Tensor,
    tops: Sequence[int],
    lefts: Sequence[int],
) -> None:
    """Emit callback of :func:`reconstruct_topk`: pair ``e`` is entry ``(j, r)``, drawn into ``out[j, r]``."""
    arr = grads.detach().float().cpu().numpy()
    for q, e in enumerate(idx.tolist()):
        j, r = entries[e]
        out[j, r] = _crop.fit_cell(_display_tile(arr[q], tops[q], lefts[q], boxes[e]), cell)


def _display_tile(rec: np.ndarray, top: int, left: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Cut the (display) box out of a reconstruction crop placed at (top, left); zero outside."""
    bt, bl, bb, br = box
    canvas = np.zeros((rec.shape[0], bb - bt, br - bl), dtype=np.float32)
    h, w = rec.shape[1:]
    t, lft, b, r = max(bt, top), max(bl, left), min(bb, top + h), min(br, left + w)
    if t < b and lft < r:
        canvas[:, t - bt : b - bt, lft - bl : r - bl] = rec[:, t - top : b - top, lft - left : r - left]
    # the scale comes from the whole reconstruction, in case the box misses a pixel of it
    return to_display(canvas, float(np.abs(rec).max()) if rec.size else 0.0)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How pairs of one layer are computed: on crops of a chain (``spatial`` modules and spans) or whole."""

    out_shape: tuple[int, ...]
    spatial: tuple[nn.Module, ...] | None = None
    rows: _crop.Span | None = None
    cols: _crop.Span | None = None


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
                self._plans[key] = _Plan(shape, convs, rows, cols)
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


class _Engine:
    """Batched, receptive-field-cropped reconstructions for one layer of one model."""

    def __init__(self, planner: _Planner, path: str, method: str, *, softmax: bool, batch_size: int) -> None:
        if method not in _hooks.METHODS:
            raise ValueError(f"method must be one of {list(_hooks.METHODS)}, got {method!r}")
        self.planner = planner
        self.model = planner.model
        self.target = _hooks.get_module(self.model, path)
        self.path = path
        self.method = method
        self.softmax = softmax
        self.batch_size = max(1, int(batch_size))

    def _output(self, fwd: _hooks.Truncated, x: Tensor) -> Tensor:
        out = fwd(x)
        return torch.softmax(out, dim=1) if self.softmax else out

    def plan(self, images: Tensor) -> _Plan:
        return self.planner.plan(self.path, self.softmax, images)

    def locate(self, images: Tensor, image_of: Tensor, units: Tensor) -> tuple[Tensor, Tensor]:
        """Each pair's argmax (row, col) in its unit's map (first maximum, row-major); 0 for 2-D outputs."""
        plan = self.plan(images)
        rows = torch.zeros(len(image_of), dtype=torch.long)
        cols = torch.zeros(len(image_of), dtype=torch.long)
        if len(plan.out_shape) != 3:
            return rows, cols
        self._check_units(units, plan)
        width = plan.out_shape[2]
        with torch.no_grad(), _hooks.truncated(self.model, self.target, "gradient") as fwd:
            for s in range(0, images.shape[0], self.batch_size):
                pick = ((image_of >= s) & (image_of < s + self.batch_size)).nonzero().flatten()
                if len(pick) == 0:
                    continue
                out = self._output(fwd, images[s : s + self.batch_size])
                maps = out[image_of[pick] - s, units[pick].to(out.device)].flatten(1)
                flat = maps.argmax(dim=1).cpu()
                rows[pick], cols[pick] = flat // width, flat % width
        return rows, cols

    def _check_units(self, units: Tensor, plan: _Plan) -> None:
        count = plan.out_shape[0]
        if len(units) and (int(units.min()) < 0 or int(units.max()) >= count):
            raise ModelError(
                f"unit out of range for layer {self.path!r} with {count} units: {units.tolist()}"
            )

    def run(
        self, images: Tensor, image_of: Tensor, units: Tensor, rows: Tensor, cols: Tensor, emit: Emit
    ) -> None:
        """Reconstruct pair ``i``: unit ``units[i]`` of ``images[image_of[i]]`` at ``(rows[i], cols[i])``.

        Calls ``emit(pair indices, grads [n, 3, h, w], tops, lefts)`` per chunk: the gradient w.r.t.
        the input crop whose top-left pixel is ``(tops[q], lefts[q])``; zero elsewhere.
        """
        plan = self.plan(images)
        self._check_units(units, plan)
        height, width = images.shape[-2:]
        spatial = len(plan.out_shape) == 3
        if spatial:
            bad = (rows < 0) | (rows >= plan.out_shape[1]) | (cols < 0) | (cols >= plan.out_shape[2])
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise ModelError(
                    f"position ({int(rows[i])}, {int(cols[i])}) outside layer {self.path!r}'s "
                    f"{plan.out_shape[1]}x{plan.out_shape[2]} map"
                )
        # group pairs by crop: (row mode, col mode, height, width) -> [(pair, top, left, row', col')]
        groups: dict[tuple[bool, bool, int, int], list[tuple[int, int, int, int, int]]] = defaultdict(list)
        if plan.rows is not None and plan.cols is not None:
            quantum_r = self._quantum(plan.rows, len(image_of))
            quantum_c = self._quantum(plan.cols, len(image_of))
        for i in range(len(image_of)):
            r, c = int(rows[i]), int(cols[i])
            if plan.rows is not None and plan.cols is not None:
                ar = _crop.axis_crop(plan.rows, r, height, quantum_r)
                ac = _crop.axis_crop(plan.cols, c, width, quantum_c)
                groups[(ar.valid, ac.valid, ar.length, ac.length)].append(
                    (i, ar.start, ac.start, ar.index, ac.index)
                )
            else:
                groups[(False, False, height, width)].append((i, 0, 0, r, c))
        full = height * width
        # autograd even when the caller runs under no_grad / inference_mode
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            _hooks.truncated(self.model, self.target, self.method) as fwd,
            _hooks.phase_backward(plan.spatial or ()),
        ):
            for (valid_r, valid_c, h, w), members in sorted(groups.items()):
                chunk = max(1, min(_MAX_CHUNK, self.batch_size * full // (h * w)))
                with _hooks.padding_off(plan.spatial or (), rows=valid_r, cols=valid_c):
                    for s in range(0, len(members), chunk):
                        part = members[s : s + chunk]
                        self._backward(fwd, images, image_of, units, part, h, w, spatial, emit)

    @staticmethod
    def _quantum(span: _crop.Span, pairs: int) -> int:
        """Border-crop length step: ~size / 3 (a multiple of the stride) when there are many pairs.

        Rounding border crops up to a few shared lengths lets them batch (oneDNN is far more efficient
        on a batch than one crop at a time, and builds one kernel per shape); with few pairs there is
        nothing to batch and the smallest crops win.
        """
        if pairs < _BUCKET_MIN_PAIRS:
            return 1
        return span.stride * max(1, -(-span.size // (3 * span.stride)))

    def _backward(
        self,
        fwd: _hooks.Truncated,
        images: Tensor,
        image_of: Tensor,
        units: Tensor,
        part: list[tuple[int, int, int, int, int]],
        h: int,
        w: int,
        spatial: bool,
        emit: Emit,
    ) -> None:
        idx = torch.tensor([p[0] for p in part])
        tops = [p[1] for p in part]
        lefts = [p[2] for p in part]
        src = image_of[idx].tolist()
        x = torch.stack(
            [images[src[q], :, tops[q] : tops[q] + h, lefts[q] : lefts[q] + w] for q in range(len(part))]
        )
        # contiguous, not channels_last (5-10 % faster here): on a channels_last map max-pool breaks ties
        # (windows of ReLU zeros) differently, and deconvnet routes its signal through those switches,
        # so the result would no longer match the model's usual (contiguous) forward and captum.
        x = x.contiguous().detach().requires_grad_(True)
        out = self._output(fwd, x)
        n = torch.arange(len(part), device=out.device)
        u = units[idx].to(out.device)
        seed = torch.zeros_like(out)
        if spatial:
            r = torch.tensor([p[3] for p in part], device=out.device)
            c = torch.tensor([p[4] for p in part], device=out.device)
            seed[n, u, r, c] = out.detach()[n, u, r, c]
        else:
            seed[n, u] = out.detach()[n, u]
        (grad,) = torch.autograd.grad(out, x, seed)
        emit(idx, grad, tops, lefts)


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
