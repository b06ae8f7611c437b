"""Exemplar evidence: each conv unit's activation map on each of its top-k images (issue 15, item 7).

Network Dissection (Bau et al. 2017, "Network Dissection: Quantifying Interpretability of Deep Visual
Representations", section 2.2) shows a unit by the region of each image where its activation map,
upsampled to the image, exceeds ``T_k``: the top-0.5 % quantile of the unit's activations over every
spatial position of the dataset. This module computes the raw values; render draws the outline
(:mod:`sitegen.render._outline`: the ``T_k`` contour of the map bilinearly interpolated between the
positions' receptive-field centres, as NetDissect's receptive-field-aware upsampler places them).

- **Maps.** One forward pass over the distinct top-k images of every chosen layer's shown units plus
  the sample, hooks on all chosen layers at once, truncated after the last of them (nothing of the
  classifier runs). Each hook keeps, per image of the batch, the maps of the (unit, rank) pairs that
  need it, as float16 at the layer's resolution (alexnet conv5 at 224 px: 13 x 13).
- **Threshold.** The quantile over the whole probe set would need a second full pass; ``T_k`` is
  estimated over the positions of ``sample`` probe images evenly spaced over the split (a class-ordered
  split is covered evenly; the top-k images themselves would bias it upwards: they are where the unit
  fires most). It is exact on that sample: numpy's default (linear) quantile of ``n = images x rows x
  cols`` values needs only the top ``n - floor(q (n - 1))`` of them, kept as a running top-m per unit
  (:class:`_TopQuantile`) so memory never holds the sample's maps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sitegen.analyses._hooks import StopForward, get_module, stop_after
from sitegen.analyses.registry import SPATIAL, Context, Problem, pick_layers
from sitegen.errors import ModelError
from sitegen.mine import Mined
from sitegen.models.types import LayerInfo
from sitegen.receptive_field import RF, unit_box
from sitegen.spec import MasksSpec
from sitegen.store import codecs
from sitegen.store.formats import MasksDoc, MasksLayer

__all__ = ["KIND", "Params", "Result", "check", "quantile_from_top", "run", "sample_indices", "save"]

KIND = "masks"
Params = MasksSpec
FILE = "masks.npz"
_LOC = ("analyses", "masks", "layers")
_F16_MAX = 65504.0


@dataclass(frozen=True, slots=True)
class LayerMasks:
    """One layer's shown units: maps on their top-k images, thresholds and patch boxes.

    Attributes:
        info: the layer.
        units: int ``[S]``: the shown units (rows of the arrays).
        images: int64 ``[S, k]``: probe image of each rank (-1: empty slot).
        maps: float16 ``[S, k, rows, cols]``: the unit's map on that image (0 for empty slots).
        threshold: float16 ``[S]``: ``T_k``.
        boxes: int32 ``[S, k, 4]``: the unclipped receptive-field box of each rank's patch
            (:func:`sitegen.receptive_field.unit_box`, what the sprite's patch tile shows).
    """

    info: LayerInfo
    units: np.ndarray
    images: np.ndarray
    maps: np.ndarray
    threshold: np.ndarray
    boxes: np.ndarray


@dataclass(frozen=True, slots=True)
class Result:
    quantile: float
    sample: int
    probe: int
    input_size: int
    layers: tuple[LayerMasks, ...]


def check(params: Params, layers: Sequence[LayerInfo], problem: Problem, network: str) -> None:
    if not isinstance(params.layers, str):
        pick_layers(params.layers, layers, problem, _LOC, network)


def sample_indices(n: int, sample: int) -> np.ndarray:
    """``sample`` probe indices evenly spaced over ``0..n-1`` (all of them when ``n <= sample``)."""
    if n <= sample:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.floor((np.arange(sample) + 0.5) * n / sample).astype(np.int64))


def top_count(n: int, q: float) -> int:
    """How many of the largest of ``n`` values fix numpy's linear ``quantile(values, q)``."""
    return min(n, n - math.floor(q * (n - 1)) + 1)


def quantile_from_top(top: np.ndarray, n: int, q: float) -> np.ndarray:
    """``np.quantile(values, q)`` (linear) per row, from each row's largest values, sorted descending.

    Args:
        top: ``[S, m]``, each row the ``m >= top_count(n, q)`` largest of its ``n`` values, descending.
        n: how many values each row had.
        q: the quantile.
    """
    p = q * (n - 1)
    lo = math.floor(p)
    frac = p - lo
    a = top[:, n - 1 - lo].astype(np.float64)  # ascending index lo = descending index n - 1 - lo
    b = top[:, max(n - 2 - lo, 0)].astype(np.float64)
    return a + frac * (b - a)


class _TopQuantile:
    """The running ``m`` largest activations of some units over the sample's positions.

    ``top`` is ``[m, S]``, each column descending. Once it holds ``m`` values, only values above a
    unit's current m-th largest can enter, so a later batch contributes only its top ``k`` per unit,
    ``k`` = the most such values any unit has (a compare over the batch, then a small ``topk``): the
    full ``topk`` of every batch cost as much as the forward. Values equal to the m-th largest may
    enter or not without changing the multiset of the top ``m``.
    """

    def __init__(self, units: Sequence[int], n_units: int, n: int, q: float, device: torch.device) -> None:
        self.select = (
            None
            if list(units) == list(range(n_units))
            else torch.as_tensor(list(units), dtype=torch.int64, device=device)
        )
        self.n, self.q, self.m = n, q, top_count(n, q)
        self.top = torch.empty((0, len(units)), device=device)
        self.seen = 0

    def update(self, act: Tensor) -> None:
        """Fold in ``act``: ``[B, U, rows, cols]`` maps of sample images."""
        x = act.permute(0, 2, 3, 1)  # [B, rows, cols, U]: a view of a channels_last map
        if self.select is not None:
            x = x.index_select(3, self.select)
        x = x.reshape(-1, x.shape[-1]).float()  # [positions, S]
        self.seen += x.shape[0]
        if len(self.top) >= self.m:
            # a unit's top k of the batch holds all its values above its m-th largest; the rest of
            # them cannot displace any of the m (bool.sum is ~100x slower than a uint8 view's)
            k = int((x > self.top[-1]).view(torch.uint8).sum(0, dtype=torch.int32).max())
            if k == 0:
                return
        else:
            k = min(self.m, x.shape[0])
        merged = torch.cat([self.top, x.topk(k, dim=0).values])
        self.top = merged.topk(min(self.m, len(merged)), dim=0).values

    def thresholds(self) -> np.ndarray:
        if self.seen != self.n:
            raise RuntimeError(f"sample gave {self.seen} positions, expected {self.n}")
        return quantile_from_top(self.top.t().cpu().numpy(), self.n, self.q)


@dataclass(slots=True)
class _LayerWork:
    """What one layer's hook does with each batch: fill the maps of the pairs, update the threshold."""

    info: LayerInfo
    units: list[int]
    images: np.ndarray  # [S, k]
    maps: np.ndarray  # float16 [S, k, rows, cols]
    pairs: dict[int, list[tuple[int, int, int]]]  # probe image -> [(row s, rank r, unit u)]
    top: _TopQuantile

    def take(self, act: Tensor, picks: Sequence[int], in_sample: Sequence[bool]) -> None:
        if act.ndim != 4 or act.shape[1] != self.info.units:
            raise ModelError(
                f"layer {self.info.name!r}: output {tuple(act.shape)} is not [batch, units, rows, cols]"
            )
        found = [(b, u, s, r) for b, i in enumerate(picks) for s, r, u in self.pairs.get(i, ())]
        if found:
            b_idx, u_idx, s_idx, r_idx = (list(v) for v in zip(*found, strict=True))
            dev = act.device
            got = act[torch.as_tensor(b_idx, device=dev), torch.as_tensor(u_idx, device=dev)]
            got = got.float().clamp(-_F16_MAX, _F16_MAX)
            self.maps[s_idx, r_idx] = got.cpu().numpy().astype(np.float16)
        rows = [b for b, keep in enumerate(in_sample) if keep]
        if len(rows) == len(picks):
            self.top.update(act)
        elif rows:
            self.top.update(act[torch.as_tensor(rows, device=act.device)])


def _layer_work(
    info: LayerInfo, units: list[int], mined: Mined, n_sample: int, q: float, device: torch.device
) -> _LayerWork:
    topk = mined.layers[info.name]
    images = np.asarray(topk.images)[units].astype(np.int64)
    _, rows, cols = info.shape
    pairs: dict[int, list[tuple[int, int, int]]] = {}
    for s, u in enumerate(units):
        for r, i in enumerate(images[s]):
            if i >= 0:
                pairs.setdefault(int(i), []).append((s, r, u))
    maps = np.zeros((len(units), images.shape[1], rows, cols), dtype=np.float16)
    top = _TopQuantile(units, info.units, n_sample * rows * cols, q, device)
    return _LayerWork(info, units, images, maps, pairs, top)


@contextmanager
def _capture(
    model: nn.Module, works: Sequence[_LayerWork], batch: dict[str, Any]
) -> Iterator[list[nn.Module]]:
    """Hook every layer's module (its output: post-ReLU for ReLU layers); yields the modules."""
    modules = [get_module(model, w.info.module) for w in works]
    with ExitStack() as stack:
        for w, m in zip(works, modules, strict=True):
            hook = m.register_forward_hook(
                lambda _m, _a, out, w=w: w.take(out, batch["picks"], batch["sample"])
            )
            stack.callback(hook.remove)
        yield modules


def _by_depth(works: Sequence[_LayerWork], sample: set[int]) -> list[list[int]]:
    """Probe images grouped by the deepest chosen layer that needs them (the sample needs every layer):
    a forward stops there (alexnet at seed scale: 16 % less work than running every image to conv5)."""
    deepest: dict[int, int] = {}
    for d, w in enumerate(works):
        for i in w.pairs:
            deepest[i] = d
    for i in sample:
        deepest[i] = len(works) - 1
    groups: list[list[int]] = [[] for _ in works]
    for i in sorted(deepest, key=lambda i: (i not in sample, i)):  # sample first: whole-batch updates
        groups[deepest[i]].append(i)
    return groups


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    lm = ctx.loaded
    infos = [
        i
        for i in pick_layers(params.layers, lm.layers, ctx.problem, _LOC, ctx.network)
        if i.kind in SPATIAL and len(i.shape) == 3 and ctx.shown.get(i.name)
    ]
    if not infos:
        return None
    device = torch.device(ctx.device)
    sample = sample_indices(len(ctx.labels), params.sample)
    works = [
        _layer_work(i, list(ctx.shown[i.name]), mined, len(sample), params.quantile, device) for i in infos
    ]
    in_sample = set(sample.tolist())
    groups = _by_depth(works, in_sample)
    total, done = sum(map(len, groups)), 0
    model = lm.module.to(device).eval()
    batch: dict[str, Any] = {}
    with torch.inference_mode(), _capture(model, works, batch) as modules:
        for d, picks in enumerate(groups):
            for start in range(0, len(picks), params.batch_size):
                chunk = picks[start : start + params.batch_size]
                batch["picks"], batch["sample"] = chunk, [i in in_sample for i in chunk]
                x, _ = ctx.batch(chunk)
                # channels_last input: 1.2-1.4x faster convs on CPU (sitegen.mine)
                x = lm.normalize(x.to(device)).contiguous(memory_format=torch.channels_last)
                try:
                    with stop_after(modules[: d + 1]):  # nothing after the deepest layer needed
                        model(x)
                except StopForward:
                    pass
                done += len(chunk)
                ctx.progress("masks", done, total)
    layers = tuple(_finish(w, mined, lm.input_size) for w in works)
    return Result(float(params.quantile), len(sample), len(ctx.labels), int(lm.input_size), layers)


def _finish(w: _LayerWork, mined: Mined, input_size: int) -> LayerMasks:
    topk = mined.layers[w.info.name]
    rf = RF(w.info.rf_size, w.info.rf_stride, w.info.rf_offset)
    boxes = np.full(w.images.shape + (4,), -1, dtype=np.int32)
    for s, u in enumerate(w.units):
        for r in np.flatnonzero(w.images[s] >= 0):
            boxes[s, r] = unit_box(rf, int(topk.rows[u, r]), int(topk.cols[u, r]))
    threshold = np.clip(w.top.thresholds(), -_F16_MAX, _F16_MAX).astype(np.float16)
    return LayerMasks(w.info, np.asarray(w.units, dtype=np.int64), w.images, w.maps, threshold, boxes)


def save(ctx: Context, result: Result, out: Path) -> MasksDoc:
    """``masks.npz`` (the arrays, per layer) and the document."""
    arrays: dict[str, np.ndarray] = {}
    layers: dict[str, MasksLayer] = {}
    for lay in result.layers:
        name = lay.info.name
        arrays |= {
            f"{name}/maps": lay.maps,
            f"{name}/images": lay.images,
            f"{name}/threshold": lay.threshold,
            f"{name}/boxes": lay.boxes,
        }
        layers[name] = MasksLayer(
            units=[int(u) for u in lay.units],
            grid=[int(v) for v in lay.maps.shape[2:]],
            rf_size=int(lay.info.rf_size),
            rf_stride=int(lay.info.rf_stride),
            rf_offset=float(lay.info.rf_offset),
        )
    codecs.write_npz(out / FILE, arrays)
    return MasksDoc(
        quantile=result.quantile,
        sample=result.sample,
        probe=result.probe,
        input_size=result.input_size,
        file=FILE,
        layers=layers,
    )
