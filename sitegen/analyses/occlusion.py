"""Occlusion: what the network loses when part of the image is hidden behind a grey square.

- :func:`occlusion` is Zeiler & Fergus 2013, sec. 4.2 and Fig. 7: a grey square slides over each image
  and, for every position, we record (a) the probability of the true class, (b) that of the class
  predicted on the intact image, (c) the most probable class, and (d) the activation of one unit of
  a chosen layer (its spatial max; by default the unit with the largest max on the intact image,
  the paper's "strongest feature map").
- :func:`empirical_rf` is the empirical receptive field of Zhou et al. 2015 ("Object Detectors
  Emerge in Deep Scene CNNs", sec. 3.2): for each top image of a unit, a small occluder slides over
  it and the *discrepancy* ``|a - a_occluded|`` of the unit at its argmax position is recorded; the
  maps are re-centred on the unit's analytic RF centre and averaged over the images.

The occluder is applied to **un-normalized** [0, 1] images (docs/INTERNALS.md) and filled with
``fill`` = 0.5, the mid grey of that space (Zeiler & Fergus use "a grey square"; after normalization
this grey is ``(0.5 - mean) / std``, close to the dataset mean for natural images). The square always
lies inside the image: its top-left corners are ``0, stride, 2 * stride, …, <= side - size`` along each
axis, and the maps are indexed by those positions, reported as the square's centres
(``top + (size - 1) / 2``) in :attr:`OcclusionResult.rows` / ``cols``.

Many occluded copies go through the network per forward: (image, position) pairs are streamed in
chunks of ``batch_size`` and every chunk's squares are drawn at once by broadcasting row and column
masks, with no Python loop over pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from sitegen.analyses._hooks import get_module, truncated
from sitegen.analyses.class_hist import probe_picks
from sitegen.analyses.registry import Context, Problem, one_layer, rounded
from sitegen.errors import ModelError, SpecError
from sitegen.mine import Mined
from sitegen.models._api import LayerInfo, LoadedModel
from sitegen.receptive_field import RF, unit_box
from sitegen.spec import OcclusionSpec
from sitegen.store.formats import OcclusionDoc, OcclusionImage

__all__ = [
    "DEFAULT_FILL",
    "KIND",
    "EmpiricalRF",
    "OcclusionResult",
    "Params",
    "Result",
    "check",
    "empirical_rf",
    "occluder_grid",
    "occlusion",
    "occlusion_geometry",
    "run",
    "save",
]

#: Grey of the un-normalized [0, 1] image space used to fill the occluder.
DEFAULT_FILL = 0.5


@dataclass(frozen=True, slots=True)
class OcclusionResult:
    """Occlusion-sensitivity maps of some images (Zeiler & Fergus 2013, Fig. 7), numpy.

    ``B`` images, an ``R x C`` grid of occluder positions.

    Attributes:
        size: side of the grey square in input pixels.
        stride: pixels between neighbouring positions.
        fill: the square's grey in un-normalized [0, 1] space.
        rows: float32 ``[R]``: the square's centre row at each grid row (``top + (size - 1) / 2``).
        cols: float32 ``[C]``: the same for grid columns.
        true_prob: float32 ``[B, R, C]``: probability of the true class with the square there.
        pred_prob: float32 ``[B, R, C]``: probability of the class predicted on the intact image.
        top_class: int64 ``[B, R, C]``: the most probable class with the square there (Fig. 7 (e)).
        activation: float32 ``[B, R, C]``: spatial max of ``units[b]`` of ``layer`` with the square there.
        layer: friendly name of the layer of ``activation``.
        units: int64 ``[B]``: the unit followed per image.
        labels: int64 ``[B]``: true classes.
        predicted: int64 ``[B]``: class predicted on the intact image.
        base_true_prob: float32 ``[B]``: true-class probability on the intact image.
        base_pred_prob: float32 ``[B]``: predicted-class probability on the intact image.
        base_activation: float32 ``[B]``: the unit's spatial max on the intact image.
    """

    size: int
    stride: int
    fill: float
    rows: np.ndarray
    cols: np.ndarray
    true_prob: np.ndarray
    pred_prob: np.ndarray
    top_class: np.ndarray
    activation: np.ndarray
    layer: str
    units: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    base_true_prob: np.ndarray
    base_pred_prob: np.ndarray
    base_activation: np.ndarray


@dataclass(frozen=True, slots=True)
class EmpiricalRF:
    """The empirical receptive field of one unit (Zhou et al. 2015), numpy.

    The map is re-centred so that the unit's analytic RF centre lies at ``((S - 1) / 2, (S - 1) / 2)``;
    the analytic box is the centred square of side :attr:`analytic_size` (``(S - analytic_size) / 2``
    is a whole number). Map pixel ``(i, j)`` is the mean discrepancy when the occluder is centred
    ``(i - (S - 1) / 2, j - (S - 1) / 2)`` px from the unit's RF centre.

    Attributes:
        layer: friendly name of the layer.
        unit: the unit (channel).
        map: float32 ``[S, S]``: mean discrepancy over the images that measured each pixel (0 where none did).
        coverage: float32 ``[S, S]``: share of the images that measured each pixel (an occluder centred
            there fits in the image).
        analytic_size: the analytic RF side (:attr:`LayerInfo.rf_size`).
        effective_size: side of the smallest square centred on the map centre holding ``mass`` of the
            map's total, interpolated linearly between whole sides; 0 when the map is all zero.
        mass: share of the total used for :attr:`effective_size` (0.9 by default).
        centroid: ``(row, col)`` of the map's centre of mass minus the map centre, in px (≈ 0 when the
            empirical RF is centred on the analytic one).
        occluder: side of the occluding square.
        stride: pixels between occluder positions.
        fill: the occluder's grey in un-normalized [0, 1] space.
        positions: int64 ``[n, 2]``: the unit's ``(row, col)`` in the layer map, per image.
        base: float32 ``[n]``: the unit's activation at ``positions`` on the intact images.
        rows: float32 ``[R]``: occluder centre rows of the per-image grids.
        cols: float32 ``[C]``: occluder centre cols.
        discrepancy: float32 ``[n, R, C]``: per image, ``|base - activation with the occluder there|``
            (in image coordinates, before re-centring; 0 where skipped as outside the analytic RF).
    """

    layer: str
    unit: int
    map: np.ndarray
    coverage: np.ndarray
    analytic_size: int
    effective_size: float
    mass: float
    centroid: tuple[float, float]
    occluder: int
    stride: int
    fill: float
    positions: np.ndarray
    base: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    discrepancy: np.ndarray


def occluder_grid(image_size: tuple[int, int], size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Top rows and left columns of the occluder positions: ``0, stride, … <= side - size`` per axis.

    Raises:
        ValueError: ``size`` does not fit the image or ``stride`` < 1.
    """
    rows, cols = image_size
    if not 1 <= size <= min(rows, cols):
        raise ValueError(f"occluder size must be in 1..{min(rows, cols)} for a {rows}x{cols} image, "
                         f"got {size}")
    if stride < 1:
        raise ValueError(f"occluder stride must be >= 1, got {stride}")
    return np.arange(0, rows - size + 1, stride), np.arange(0, cols - size + 1, stride)


def occluded_batch(input_size: int) -> int:
    """Occluded copies per forward pass at the memory of 256 copies of a 64 px image.

    256 copies of a 224 px image through alexnet hold about 1 GB of activations, which set the seed-
    scale build's peak RSS (issue 13): the batch shrinks with the image's area instead (21 at 224 px).
    """
    return max(4, round(256 * (64 / input_size) ** 2))


def occlusion(
    loaded: LoadedModel,
    images: Tensor,
    labels: Tensor | Sequence[int],
    *,
    size: int = 8,
    stride: int = 4,
    layer: LayerInfo | str | None = None,
    unit: int | None = None,
    fill: float = DEFAULT_FILL,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
) -> OcclusionResult:
    """Occlusion-sensitivity maps (Zeiler & Fergus 2013, Fig. 7) of some images.

    Args:
        loaded: the network; its module is moved to ``device`` (and stays there) in eval mode.
        images: un-normalized ``[B, 3, H, W]`` images in [0, 1].
        labels: true class per image.
        size: side of the grey square (8 px suits 64 px doodles: 15 x 15 positions at stride 4).
        stride: pixels between positions.
        layer: layer of the activation map (a :class:`LayerInfo`, friendly name or module path);
            ``None``: the last conv/block layer (the paper's layer 5).
        unit: the unit to follow in every image; ``None``: per image, the unit with the largest
            spatial max on the intact image.
        fill: the square's grey in un-normalized space.
        device: where to compute.
        batch_size: occluded copies per forward pass.

    Returns:
        An :class:`OcclusionResult`.

    Raises:
        ModelError: unknown layer, or ``unit`` not a unit of it.
    """
    info = _resolve_layer(loaded, layer)
    device = torch.device(device)
    model = loaded.module.to(device).eval()
    x = images.to(device, torch.float32)
    n, _, h, w = x.shape
    y = torch.as_tensor(labels, dtype=torch.int64).reshape(-1).to(device)
    if len(y) != n:
        raise ValueError(f"need one label per image: {n} images, {len(y)} labels")
    tops, lefts = (torch.as_tensor(a, device=device) for a in occluder_grid((h, w), size, stride))
    grid_r, grid_c = len(tops), len(lefts)
    target = None if info.kind == "prob" else get_module(model, info.module)

    def forward(batch: Tensor) -> tuple[Tensor, Tensor]:
        """Softmax of the output and per-unit spatial max of the layer, for a normalized batch."""
        if target is None:  # prob: the units are the classes
            probs = model(batch).float().softmax(dim=1)
            return probs, probs
        store: list[Tensor] = []
        with _capture(target, _unit_max, store):
            probs = model(batch).float().softmax(dim=1)
        if not store:
            raise ModelError(f"layer {info.name!r} (module {info.module!r}) was not called in the forward")
        return probs, store[-1]

    with torch.inference_mode():
        base_probs, base_units = _chunked(forward, [loaded.normalize(c) for c in x.split(batch_size)])
        pred = base_probs.argmax(dim=1)
        if unit is None:
            units = base_units.argmax(dim=1)
        elif 0 <= unit < base_units.shape[1]:
            units = torch.full((n,), unit, dtype=torch.int64, device=device)
        else:
            last = base_units.shape[1] - 1
            raise ModelError(f"unit {unit} is not a unit of layer {info.name!r} (0..{last})")

        # every (image, position) pair, image-major, streamed in chunks of batch_size
        total = n * grid_r * grid_c
        true_p = torch.empty(total, device=device)
        pred_p = torch.empty(total, device=device)
        top = torch.empty(total, dtype=torch.int64, device=device)
        act = torch.empty(total, device=device)
        for chunk in torch.arange(total, device=device).split(batch_size):
            img, pos = chunk // (grid_r * grid_c), chunk % (grid_r * grid_c)
            occluded = _occlude(x, img, tops[pos // grid_c], lefts[pos % grid_c], size, fill)
            probs, maxima = forward(loaded.normalize(occluded))
            true_p[chunk] = probs.gather(1, y[img, None])[:, 0]
            pred_p[chunk] = probs.gather(1, pred[img, None])[:, 0]
            top[chunk] = probs.argmax(dim=1)
            act[chunk] = maxima.gather(1, units[img, None])[:, 0].float()

    def grid(t: Tensor) -> np.ndarray:
        return t.view(n, grid_r, grid_c).cpu().numpy()

    centre = (size - 1) / 2
    return OcclusionResult(
        size=size,
        stride=stride,
        fill=float(fill),
        rows=(tops.cpu().numpy() + centre).astype(np.float32),
        cols=(lefts.cpu().numpy() + centre).astype(np.float32),
        true_prob=grid(true_p).astype(np.float32),
        pred_prob=grid(pred_p).astype(np.float32),
        top_class=grid(top).astype(np.int64),
        activation=grid(act).astype(np.float32),
        layer=info.name,
        units=units.cpu().numpy().astype(np.int64),
        labels=y.cpu().numpy().astype(np.int64),
        predicted=pred.cpu().numpy().astype(np.int64),
        base_true_prob=base_probs.gather(1, y[:, None])[:, 0].cpu().numpy().astype(np.float32),
        base_pred_prob=base_probs.gather(1, pred[:, None])[:, 0].cpu().numpy().astype(np.float32),
        base_activation=base_units.gather(1, units[:, None])[:, 0].float().cpu().numpy().astype(np.float32),
    )


def empirical_rf(
    loaded: LoadedModel,
    layer: LayerInfo,
    unit: int,
    images: Tensor,
    positions: Sequence[tuple[int, int]] | np.ndarray | Tensor,
    *,
    occluder: int = 5,
    stride: int = 2,
    fill: float = DEFAULT_FILL,
    mass: float = 0.9,
    restrict: bool = True,
    map_size: int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> EmpiricalRF:
    """The empirical receptive field of a unit over its top images (Zhou et al. 2015, sec. 3.2).

    For each image, an ``occluder``-px grey square slides over it at ``stride``; the discrepancy
    ``|a(row, col) - a_occluded(row, col)|`` of the unit at its argmax ``(row, col)`` (from mining) is
    recorded per position, interpolated linearly between occluder centres to input pixels, shifted so
    that the unit's analytic RF centre ``rf_offset + (row, col) * rf_stride`` is the map centre, and
    averaged over the images (per pixel, over the images whose occluder could be centred there).

    The forward stops at ``layer`` (nothing after it is computed). With ``restrict`` only occluder
    positions that overlap the unit's analytic RF box are run: elsewhere the unit cannot see the
    occluder and the discrepancy is 0 by construction (a test checks both ways agree).

    Args:
        loaded: the network; its module is moved to ``device`` (and stays there) in eval mode.
        layer: the unit's layer (its RF fields place the map; any kind but ``prob``).
        unit: the channel (or neuron).
        images: un-normalized ``[n, 3, H, W]`` top images of the unit, in [0, 1].
        positions: ``(row, col)`` of the unit's max in each image's layer map (``Mined`` rows/cols;
            ``(0, 0)`` for linear layers).
        occluder: side of the square (Zhou et al.: 11 px at stride 3 on 227 px; 5 px at stride 2
            suits 64 px doodles).
        stride: pixels between occluder positions.
        fill: the square's grey in un-normalized space.
        mass: share of the map's total that :attr:`EmpiricalRF.effective_size` encloses.
        restrict: skip positions outside the analytic RF (exact, much faster for small RFs).
        map_size: side of the re-centred map; ``None``: ``rf_size + occluder - 1 + 2 * (stride - 1)``
            (all the discrepancy can reach), plus 1 when needed to put the RF centre on the map centre.
        device: where to compute.
        batch_size: occluded copies per forward pass.

    Returns:
        An :class:`EmpiricalRF`.

    Raises:
        ModelError: ``layer`` is ``prob`` or its module is missing, ``unit`` or a position is out of range.
    """
    if layer.kind == "prob":
        raise ModelError("the empirical receptive field needs a conv, block, pool or linear layer, "
                         "not 'prob'")
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    device = torch.device(device)
    model = loaded.module.to(device).eval()
    x = images.to(device, torch.float32)
    n, _, h, w = x.shape
    pos = torch.as_tensor(np.asarray(positions), dtype=torch.int64).reshape(-1, 2).to(device)
    if len(pos) != n:
        raise ValueError(f"need one (row, col) per image: {n} images, {len(pos)} positions")
    tops_np, lefts_np = occluder_grid((h, w), occluder, stride)
    tops, lefts = torch.as_tensor(tops_np, device=device), torch.as_tensor(lefts_np, device=device)
    grid_r, grid_c = len(tops), len(lefts)

    rf = RF(layer.rf_size, layer.rf_stride, layer.rf_offset)
    with torch.inference_mode(), truncated(model, get_module(model, layer.module)) as run:

        def unit_at(batch: Tensor, img: Tensor) -> Tensor:
            out = run(loaded.normalize(batch))
            out = out if out.dim() == 4 else out.reshape(out.shape[0], out.shape[1], 1, 1)
            if not 0 <= unit < out.shape[1]:
                raise ModelError(f"unit {unit} is not a unit of layer {layer.name!r} (0..{out.shape[1] - 1})")
            r, c = pos[img, 0], pos[img, 1]
            if bool(((r < 0) | (r >= out.shape[2]) | (c < 0) | (c >= out.shape[3])).any()):
                raise ModelError(f"a position lies outside layer {layer.name!r}'s {tuple(out.shape[2:])} map")
            return out[torch.arange(len(img), device=device), unit, r, c].float()

        all_images = torch.arange(n, device=device)
        base = torch.cat([unit_at(x[c], c) for c in all_images.split(batch_size)])

        # (image, grid row, grid col) triples to run: all of them, or those overlapping the analytic box
        img_i, r_i, c_i = torch.meshgrid(all_images, torch.arange(grid_r, device=device),
                                         torch.arange(grid_c, device=device), indexing="ij")
        img_i, r_i, c_i = img_i.reshape(-1), r_i.reshape(-1), c_i.reshape(-1)
        if restrict:
            boxes = torch.as_tensor(
                [unit_box(rf, int(r), int(c)) for r, c in pos.tolist()], dtype=torch.int64, device=device
            )
            b = boxes[img_i]
            t, lf = tops[r_i], lefts[c_i]
            keep = (t < b[:, 2]) & (t + occluder > b[:, 0]) & (lf < b[:, 3]) & (lf + occluder > b[:, 1])
            img_i, r_i, c_i = img_i[keep], r_i[keep], c_i[keep]

        disc = torch.zeros(n, grid_r, grid_c, device=device)
        for chunk in torch.arange(len(img_i), device=device).split(batch_size):
            img, rr, cc = img_i[chunk], r_i[chunk], c_i[chunk]
            a = unit_at(_occlude(x, img, tops[rr], lefts[cc], occluder, fill), img)
            disc[img, rr, cc] = (base[img] - a).abs()

    disc_np = disc.cpu().numpy().astype(np.float32)
    centre = (occluder - 1) / 2
    row_c, col_c = tops_np + centre, lefts_np + centre
    side = _map_side(layer.rf_size, occluder, stride, layer.rf_offset) if map_size is None else map_size
    if (side - 1) / 2 % 1 != layer.rf_offset % 1:
        raise ValueError(f"map_size {side} cannot centre an RF whose offset is {layer.rf_offset}: use "
                         f"an {'odd' if layer.rf_offset % 1 == 0 else 'even'} size")
    total = np.zeros((side, side), np.float64)
    count = np.zeros((side, side), np.float64)
    wr, cov_r = _interp_matrix(row_c, h)
    wc, cov_c = _interp_matrix(col_c, w)
    for i, (row, col) in enumerate(pos.cpu().tolist()):
        pixel = wr @ disc_np[i].astype(np.float64) @ wc.T  # [H, W]
        covered = np.outer(cov_r, cov_c)
        # shift so that the unit's RF centre lands on the map centre (a whole number by parity)
        shift_r = round((side - 1) / 2 - (layer.rf_offset + row * layer.rf_stride))
        shift_c = round((side - 1) / 2 - (layer.rf_offset + col * layer.rf_stride))
        _paste_add(total, pixel * covered, shift_r, shift_c)
        _paste_add(count, covered.astype(np.float64), shift_r, shift_c)
    mean_map = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    eff, centroid = _effective_size(mean_map, mass)
    return EmpiricalRF(
        layer=layer.name,
        unit=int(unit),
        map=mean_map.astype(np.float32),
        coverage=(count / max(n, 1)).astype(np.float32),
        analytic_size=int(layer.rf_size),
        effective_size=eff,
        mass=float(mass),
        centroid=centroid,
        occluder=occluder,
        stride=stride,
        fill=float(fill),
        positions=pos.cpu().numpy().astype(np.int64),
        base=base.cpu().numpy().astype(np.float32),
        rows=row_c.astype(np.float32),
        cols=col_c.astype(np.float32),
        discrepancy=disc_np,
    )


# --- internals --------------------------------------------------------------------------------------


def _occlude(x: Tensor, img: Tensor, tops: Tensor, lefts: Tensor, size: int, fill: float) -> Tensor:
    """Copies ``x[img]`` with a ``size``-px square of ``fill`` at ``(tops, lefts)``: ``[n, 3, H, W]``.

    The squares are the outer product of a row mask ``[n, H]`` and a column mask ``[n, W]``.
    """
    h, w = x.shape[-2:]
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    row_in = (r >= tops[:, None]) & (r < tops[:, None] + size)
    col_in = (c >= lefts[:, None]) & (c < lefts[:, None] + size)
    mask = row_in[:, None, :, None] & col_in[:, None, None, :]
    return torch.where(mask, x.new_tensor(fill), x[img])


def _unit_max(out: Tensor) -> Tensor:
    """Per-unit spatial max: ``[B, C, h, w] -> [B, C]``; a ``[B, D]`` output is its own max."""
    return out.flatten(2).amax(dim=2) if out.dim() > 2 else out


@contextmanager
def _capture(module: nn.Module, reduce: Callable[[Tensor], Tensor], store: list[Tensor]) -> Iterator[None]:
    """Store ``reduce(output)`` of ``module`` at each call.

    Reduced at once, inside the hook: a later in-place op (a residual ``+=``) cannot change it.
    """

    def hook(mod: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, Tensor):
            raise ModelError(f"the output of {type(mod).__name__} is not a single tensor")
        store.append(reduce(output))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _chunked(
    forward: Callable[[Tensor], tuple[Tensor, Tensor]], batches: list[Tensor]
) -> tuple[Tensor, Tensor]:
    outs = [forward(b) for b in batches]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


def _resolve_layer(loaded: LoadedModel, layer: LayerInfo | str | None) -> LayerInfo:
    if isinstance(layer, LayerInfo):
        return layer
    if layer is None:
        for info in reversed(loaded.layers):
            if info.kind in ("conv", "block"):
                return info
        raise ModelError(f"{loaded.arch}: no conv or block layer; layers: {[i.name for i in loaded.layers]}")
    try:
        return loaded.layer(layer)
    except KeyError:
        names = [i.name for i in loaded.layers]
        raise ModelError(f"{loaded.arch}: no layer {layer!r}; layers: {names}") from None


def _map_side(rf_size: int, occluder: int, stride: int, rf_offset: float) -> int:
    side = rf_size + occluder - 1 + 2 * (stride - 1)
    want_half = rf_offset % 1 != 0  # an RF centre on a pixel boundary needs an even map
    if (side % 2 == 0) != want_half:
        side += 1
    return side


def _interp_matrix(centres: np.ndarray, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation from grid values at ``centres`` to whole pixels: ``[pixels, G]`` weights and
    the pixels that lie between the first and last centre (the others are not measured)."""
    weights = np.zeros((pixels, len(centres)), np.float64)
    p = np.arange(pixels, dtype=np.float64)
    covered = (p >= centres[0]) & (p <= centres[-1])
    if len(centres) == 1:
        weights[covered, 0] = 1.0
        return weights, covered
    step = centres[1] - centres[0]
    g = np.clip((p - centres[0]) / step, 0, len(centres) - 1)
    lo = np.minimum(np.floor(g).astype(int), len(centres) - 2)
    frac = g - lo
    rows = np.flatnonzero(covered)
    weights[rows, lo[rows]] = 1 - frac[rows]
    weights[rows, lo[rows] + 1] += frac[rows]
    return weights, covered


def _paste_add(canvas: np.ndarray, image: np.ndarray, shift_r: int, shift_c: int) -> None:
    """``canvas[i + shift_r, j + shift_c] += image[i, j]`` where both exist."""
    h, w = image.shape
    s_h, s_w = canvas.shape
    r0, r1 = max(0, -shift_r), min(h, s_h - shift_r)
    c0, c1 = max(0, -shift_c), min(w, s_w - shift_c)
    if r0 < r1 and c0 < c1:
        canvas[r0 + shift_r : r1 + shift_r, c0 + shift_c : c1 + shift_c] += image[r0:r1, c0:c1]


def _effective_size(m: np.ndarray, mass: float) -> tuple[float, tuple[float, float]]:
    """Side of the smallest centred square holding ``mass`` of the total, and the mass centroid offset."""
    total = float(m.sum())
    if total <= 0:
        return 0.0, (0.0, 0.0)
    side = m.shape[0]
    c = (side - 1) / 2
    idx = np.arange(side, dtype=np.float64)
    centroid = (
        float((m.sum(axis=1) * idx).sum() / total - c),
        float((m.sum(axis=0) * idx).sum() / total - c),
    )
    target = mass * total
    prev_side, prev_mass = 0.0, 0.0
    for s in range(2 - side % 2, side + 1, 2):  # sides with the map's parity: centred on the map centre
        lo = round(c - (s - 1) / 2)
        inside = float(m[lo : lo + s, lo : lo + s].sum())
        if inside >= target - 1e-12 * total:
            frac = (target - prev_mass) / (inside - prev_mass) if inside > prev_mass else 1.0
            return float(prev_side + frac * (s - prev_side)), centroid
        prev_side, prev_mass = float(s), inside
    return float(side), centroid  # unreachable: the whole map holds all the mass



# --- the atlas entry (issue 12: sitegen.analyses.registry) ------------------------------------------

KIND = "occlusion"
Params = OcclusionSpec


@dataclass(frozen=True, slots=True)
class Result:
    """Occlusion maps of the probe picks (one per class, in class order)."""

    images: tuple[int, ...]
    maps: OcclusionResult


def occlusion_geometry(size: int | None, stride: int | None, input_size: int) -> tuple[int, int]:
    """The occluding square and its stride: the spec's, or 1/8 of the input and half of that.

    A fixed 8 px square with stride 4 (right for 64 px doodles) is 2,809 positions on a 224 px image:
    the cost grows with the square of the input side, so the defaults scale with it (issue 13) and
    every input size gets the same 15 x 15 map of the same relative coarseness.
    """
    square = size or max(2, round(input_size / 8))
    return square, stride or max(1, square // 2)


def check(params: Params, layers: Sequence[LayerInfo], problem: Problem, network: str) -> None:
    one_layer(params.layer, layers, problem, ("analyses", KIND, "layer"), network)


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    """Slide a grey square over ``params.images`` probe images (Zeiler & Fergus 2013, Fig. 7)."""
    lm = ctx.loaded
    info = one_layer(params.layer, lm.layers, ctx.problem, ("analyses", KIND, "layer"), ctx.network)
    if info is None:
        return None
    size = lm.input_size
    square, stride = occlusion_geometry(params.size, params.stride, size)
    if square >= size:
        raise SpecError([ctx.problem(("analyses", KIND, "size"), f"must be below the {size} px input")])
    picks = probe_picks(mined.labels, params.images)
    images, labels = ctx.batch(picks)
    res = occlusion(
        lm,
        images,
        labels,
        size=square,
        stride=stride,
        layer=info,
        device=ctx.device,
        batch_size=params.batch_size or occluded_batch(size),
    )
    return Result(tuple(picks), res)


def save(ctx: Context, result: Result, out: Path) -> OcclusionDoc:
    res = result.maps
    entries = [
        OcclusionImage(
            index=idx,
            label=int(res.labels[j]),
            predicted=int(res.predicted[j]),
            unit=int(res.units[j]),
            base_true_prob=round(float(res.base_true_prob[j]), 4),
            base_pred_prob=round(float(res.base_pred_prob[j]), 4),
            base_activation=round(float(res.base_activation[j]), 4),
            true_prob=rounded(res.true_prob[j]),
            pred_prob=rounded(res.pred_prob[j]),
            activation=rounded(res.activation[j]),
            top_class=res.top_class[j].tolist(),
        )
        for j, idx in enumerate(result.images)
    ]
    return OcclusionDoc(
        size=res.size,
        stride=res.stride,
        fill=res.fill,
        layer=res.layer,
        rows=rounded(res.rows, 2),
        cols=rounded(res.cols, 2),
        images=entries,
    )
