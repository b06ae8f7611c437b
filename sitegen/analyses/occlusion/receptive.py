"""The empirical receptive field (Zhou et al. 2015, "Object Detectors Emerge in Deep Scene CNNs").

:func:`empirical_rf`: for each top image of a unit, the discrepancy of the unit when a small square
hides each position, re-centred on the unit's analytic RF centre and averaged (:class:`EmpiricalRF`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sitegen.analyses._hooks import get_module, truncated
from sitegen.analyses.occlusion.occluder import DEFAULT_FILL, _occlude, occluder_grid
from sitegen.errors import ModelError
from sitegen.models.types import LayerInfo, LoadedModel
from sitegen.receptive_field import RF, unit_box

__all__ = ["EmpiricalRF", "empirical_rf"]


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
    rf = RF(layer.rf_size, layer.rf_stride, layer.rf_offset)
    base, disc = _discrepancies(
        loaded,
        model,
        layer,
        unit,
        x,
        pos,
        (tops, lefts),
        occluder=occluder,
        fill=fill,
        rf=rf if restrict else None,
        batch_size=batch_size,
    )

    disc_np = disc.cpu().numpy().astype(np.float32)
    centre = (occluder - 1) / 2
    row_c, col_c = tops_np + centre, lefts_np + centre
    side = _map_side(layer.rf_size, occluder, stride, layer.rf_offset) if map_size is None else map_size
    if (side - 1) / 2 % 1 != layer.rf_offset % 1:
        raise ValueError(f"map_size {side} cannot centre an RF whose offset is {layer.rf_offset}: use "
                         f"an {'odd' if layer.rf_offset % 1 == 0 else 'even'} size")
    total, count = _recentred(disc_np, pos.cpu().tolist(), layer, (row_c, col_c), (h, w), side)
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


def _discrepancies(
    loaded: LoadedModel,
    model: torch.nn.Module,
    layer: LayerInfo,
    unit: int,
    x: Tensor,
    pos: Tensor,
    grid: tuple[Tensor, Tensor],
    *,
    occluder: int,
    fill: float,
    rf: RF | None,
    batch_size: int,
) -> tuple[Tensor, Tensor]:
    """The unit's activation at ``pos`` on the intact images (``[n]``) and its discrepancy with the
    occluder at each grid position (``[n, R, C]``; with ``rf``, 0 outside the analytic RF, not run)."""
    tops, lefts = grid
    n, device = len(x), x.device
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

        img_i, r_i, c_i = _to_run(all_images, pos, tops, lefts, occluder, rf)
        disc = torch.zeros(n, len(tops), len(lefts), device=device)
        for chunk in torch.arange(len(img_i), device=device).split(batch_size):
            img, rr, cc = img_i[chunk], r_i[chunk], c_i[chunk]
            a = unit_at(_occlude(x, img, tops[rr], lefts[cc], occluder, fill), img)
            disc[img, rr, cc] = (base[img] - a).abs()
    return base, disc


def _to_run(
    images: Tensor, pos: Tensor, tops: Tensor, lefts: Tensor, occluder: int, rf: RF | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(image, grid row, grid col) triples to run: all of them (``rf`` None), or those whose square
    overlaps the unit's analytic box (``unit_box(rf, row, col)`` of each image's position)."""
    device = images.device
    img_i, r_i, c_i = torch.meshgrid(images, torch.arange(len(tops), device=device),
                                     torch.arange(len(lefts), device=device), indexing="ij")
    img_i, r_i, c_i = img_i.reshape(-1), r_i.reshape(-1), c_i.reshape(-1)
    if rf is not None:
        boxes = torch.as_tensor(
            [unit_box(rf, int(r), int(c)) for r, c in pos.tolist()], dtype=torch.int64, device=device
        )
        b = boxes[img_i]
        t, lf = tops[r_i], lefts[c_i]
        keep = (t < b[:, 2]) & (t + occluder > b[:, 0]) & (lf < b[:, 3]) & (lf + occluder > b[:, 1])
        img_i, r_i, c_i = img_i[keep], r_i[keep], c_i[keep]
    return img_i, r_i, c_i


def _recentred(
    disc: np.ndarray,
    positions: list[list[int]],
    layer: LayerInfo,
    centres: tuple[np.ndarray, np.ndarray],
    image_size: tuple[int, int],
    side: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's discrepancy at input pixels, moved so its unit's RF centre is the map centre.

    Returns the sum over the images and how many measured each pixel, ``float64[side, side]`` each.
    """
    row_c, col_c = centres
    h, w = image_size
    total = np.zeros((side, side), np.float64)
    count = np.zeros((side, side), np.float64)
    wr, cov_r = _interp_matrix(row_c, h)
    wc, cov_c = _interp_matrix(col_c, w)
    for i, (row, col) in enumerate(positions):
        pixel = wr @ disc[i].astype(np.float64) @ wc.T  # [H, W]
        covered = np.outer(cov_r, cov_c)
        # shift so that the unit's RF centre lands on the map centre (a whole number by parity)
        shift_r = round((side - 1) / 2 - (layer.rf_offset + row * layer.rf_stride))
        shift_c = round((side - 1) / 2 - (layer.rf_offset + col * layer.rf_stride))
        _paste_add(total, pixel * covered, shift_r, shift_c)
        _paste_add(count, covered.astype(np.float64), shift_r, shift_c)
    return total, count


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
