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

The package: :mod:`.occluder` (the square's grid, batch size and drawing), :mod:`.sensitivity`
(:func:`occlusion`), :mod:`.receptive` (:func:`empirical_rf`); this module is the atlas entry
(``run``, ``save``, ``check``: :mod:`sitegen.analyses.registry`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sitegen.analyses.class_hist import probe_picks
from sitegen.analyses.occlusion.occluder import DEFAULT_FILL, occluder_grid
from sitegen.analyses.occlusion.occluder import occluded_batch as occluded_batch
from sitegen.analyses.occlusion.receptive import EmpiricalRF, empirical_rf
from sitegen.analyses.occlusion.sensitivity import OcclusionResult, occlusion
from sitegen.analyses.registry import Context, Problem, one_layer, rounded
from sitegen.errors import SpecError
from sitegen.mine import Mined
from sitegen.models.types import LayerInfo
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
        progress=lambda done, total: ctx.progress(KIND, done, total),
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
