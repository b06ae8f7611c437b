"""Empirical receptive fields (Zhou et al. 2015) as an atlas analysis (issue 12 registry entry).

The computation is :func:`sitegen.analyses.occlusion.empirical_rf` (it shares the occluder with
occlusion sensitivity); this module picks its units and images and stores the maps: for the first
``units`` shown units of each chosen layer, the discrepancy map over the unit's top images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sitegen.analyses.activation_maps import viridis
from sitegen.analyses.occlusion import EmpiricalRF, empirical_rf, occluded_batch
from sitegen.analyses.registry import Context, Problem, pick_layers
from sitegen.mine import Mined
from sitegen.models.types import LayerInfo
from sitegen.spec import EmpiricalRFSpec
from sitegen.store import codecs
from sitegen.store.formats import ErfDoc, ErfUnit

__all__ = ["KIND", "Params", "Result", "check", "erf_geometry", "run", "save"]

KIND = "erf"
Params = EmpiricalRFSpec
_LOC = ("analyses", "empirical_rf", "layers")


@dataclass(frozen=True, slots=True)
class Result:
    """The maps, per layer and unit, with the number of top images each averaged."""

    occluder: int
    stride: int
    maps: tuple[tuple[str, int, int, EmpiricalRF], ...]  # (layer, unit, images, map)


def erf_geometry(occluder: int | None, stride: int | None, input_size: int) -> tuple[int, int]:
    """Zhou et al. (2015) occlude 11 px squares at stride 3 on 227 px images: scaled to the input."""
    side = occluder or max(3, round(input_size * 11 / 227))
    return side, stride or max(1, round(input_size * 3 / 227))


def check(params: Params, layers: Sequence[LayerInfo], problem: Problem, network: str) -> None:
    if not isinstance(params.layers, str):
        pick_layers(params.layers, layers, problem, _LOC, network)


def run(ctx: Context, mined: Mined, params: Params) -> Result | None:
    lm = ctx.loaded
    infos = pick_layers(params.layers, lm.layers, ctx.problem, _LOC, ctx.network)
    occluder, stride = erf_geometry(params.occluder, params.stride, lm.input_size)
    maps = []
    for info in infos:
        if info.kind == "prob":
            continue
        topk = mined.layers[info.name]
        for u in ctx.shown.get(info.name, [])[: params.units]:
            idx = [int(i) for i in topk.images[u] if i >= 0][: params.images]
            if not idx:
                continue
            n = len(idx)
            images = torch.stack([ctx.image(i) for i in idx])
            pos = np.stack([topk.rows[u][:n], topk.cols[u][:n]], axis=1)
            res = empirical_rf(
                lm,
                info,
                u,
                images,
                pos,
                occluder=occluder,
                stride=stride,
                device=ctx.device,
                batch_size=params.batch_size or occluded_batch(lm.input_size),
            )
            maps.append((info.name, u, n, res))
    return Result(occluder, stride, tuple(maps)) if maps else None


def save(ctx: Context, result: Result, out: Path) -> ErfDoc:
    """``erf/<layer>/unit-0007.png`` (viridis, scaled to the map's peak) and the document."""
    layers: dict[str, dict[str, ErfUnit]] = {}
    for layer, u, n, res in result.maps:
        peak = float(res.map.max())
        name = f"erf/{layer}/unit-{u:04d}.png"
        codecs.write_png(out / name, viridis(res.map / peak if peak > 0 else res.map))
        layers.setdefault(layer, {})[str(u)] = ErfUnit(
            png=name,
            map_size=int(res.map.shape[0]),
            analytic_size=res.analytic_size,
            effective_size=round(float(res.effective_size), 2),
            centroid=[round(float(c), 2) for c in res.centroid],
            mass=res.mass,
            images=n,
            peak=round(peak, 5),
        )
    return ErfDoc(occluder=result.occluder, stride=result.stride, layers=layers)
