"""The literature's other techniques, per atlas checkpoint: run what ``analyses:`` enables, store it.

Called by :func:`sitegen.build._analyze` after mining, with the loaded model. Each technique is one
analysis module's entry function (``sitegen/analyses/*.py``); this module only picks its inputs from
the spec and the mining results and writes its outputs as plain JSON and images into the checkpoint's
store folder (docs/INTERNALS.md, "The artifact store"), for :mod:`sitegen.render.techniques` to read:

=====================  ==========================================================  ============
file                   content                                                     page
=====================  ==========================================================  ============
``gradcam.json``       Grad-CAM of the true and the predicted class (+ PNGs)       network
``occlusion.json``     occlusion maps: true/predicted-class probability, a unit    network
``embedding.json``     t-SNE (or PCA) of the penultimate features of the probe set network
``invariance.json``    feature distance and true-class probability vs transform    network
``stroke.json``        per-class stroke density / complexity, Spearman per layer    network, layer
``featvis.json``       optimized images of shown units (+ WebP per unit)            unit, layer
``erf.json``           empirical receptive fields of a few units (+ PNG per unit)   unit
=====================  ==========================================================  ============

Probe images for Grad-CAM, occlusion and invariance are the same as the activation maps': one per
class in class order (:func:`sitegen.analyses.class_hist.probe_picks`), so a reader sees one image
under every technique.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sitegen.analyses import class_hist
from sitegen.analyses import stroke as stroke_mod
from sitegen.analyses.activation_maps import blend, viridis
from sitegen.analyses.class_hist import probe_picks
from sitegen.analyses.embedding import embed
from sitegen.analyses.featvis import featvis
from sitegen.analyses.gradcam import run_gradcam
from sitegen.analyses.invariance import invariance
from sitegen.analyses.occlusion import empirical_rf, occlusion
from sitegen.errors import SpecError
from sitegen.mine import Mined
from sitegen.models import LoadedModel
from sitegen.models._api import LayerInfo
from sitegen.spec import AnalysesSpec, LayerPick
from sitegen.store import codecs

log = logging.getLogger("sitegen")

#: Format of every technique JSON file (bumped when a reader could misread an older one).
FORMAT = 1

#: Order of the techniques (manifest ``techniques`` and page sections).
NAMES = ("gradcam", "occlusion", "embedding", "invariance", "stroke", "featvis", "erf")

SPATIAL = ("conv", "block")
_OVERLAY_ALPHA = 0.55


@dataclass
class Inputs:
    """What the techniques need from the build, without the build's types."""

    loaded: LoadedModel
    mined: Mined
    image: Callable[[int], torch.Tensor]  # probe index -> [3, H, W] in [0, 1]
    picture: Callable[[int], np.ndarray]  # probe index -> uint8 [H, W, 3]
    class_names: Sequence[str]
    weighted: dict[str, np.ndarray]  # layer -> rank-weighted class preference
    shown: dict[str, list[int]]  # layer -> units with pages
    device: torch.device
    seed: int
    problem: Callable[[tuple, str], str]  # spec.problem, for SpecError lines
    images_used: set[int] = field(default_factory=set)
    timings: dict[str, float] = field(default_factory=dict)


def run_techniques(a: AnalysesSpec, inputs: Inputs, out: Path, network: str) -> list[str]:
    """Run every enabled technique; write its files under ``out`` (the checkpoint's store folder).

    Returns:
        The names of the techniques written, in :data:`NAMES` order.

    Raises:
        SpecError: a layer named under ``analyses:`` is not a layer of this network.
    """
    runs: list[tuple[str, bool, Callable[[], None]]] = [
        ("gradcam", a.gradcam.enabled, lambda: _gradcam(a, inputs, out, network)),
        ("occlusion", a.occlusion.enabled, lambda: _occlusion(a, inputs, out, network)),
        ("embedding", a.embedding.enabled, lambda: _embedding(a, inputs, out)),
        ("invariance", a.invariance.enabled, lambda: _invariance(a, inputs, out, network)),
        ("stroke", a.stroke.enabled, lambda: _stroke(a, inputs, out)),
        ("featvis", a.featvis.enabled, lambda: _featvis(a, inputs, out, network)),
        ("erf", a.empirical_rf.enabled, lambda: _erf(a, inputs, out, network)),
    ]
    done = []
    for name, enabled, fn in runs:
        if not enabled:
            continue
        t = time.perf_counter()
        if fn() is not False:
            done.append(name)
        inputs.timings[name] = time.perf_counter() - t
    return done


def check_layers(
    a: AnalysesSpec, layers: Sequence[LayerInfo], problem: Callable[[tuple, str], str], network: str
) -> None:
    """Raise the SpecError a technique would raise for its layer names, before any work is done."""
    if a.gradcam.enabled:
        _one_layer(a.gradcam.layer, layers, problem, ("analyses", "gradcam", "layer"), network)
    if a.occlusion.enabled:
        _one_layer(a.occlusion.layer, layers, problem, ("analyses", "occlusion", "layer"), network)
    picks = [
        (a.featvis.enabled, a.featvis.layers, "featvis"),
        (a.empirical_rf.enabled, a.empirical_rf.layers, "empirical_rf"),
        (a.invariance.enabled, a.invariance.layers, "invariance"),
    ]
    for enabled, pick, name in picks:
        if enabled and pick is not None and not isinstance(pick, str):
            pick_layers(pick, layers, problem, ("analyses", name, "layers"), network)


# --- picking inputs ----------------------------------------------------------------------------------


def pick_layers(
    pick: LayerPick,
    layers: Sequence[LayerInfo],
    problem: Callable[[tuple, str], str],
    loc: tuple,
    network: str,
) -> list[LayerInfo]:
    """``conv``: every conv/block layer; ``last``: the last one; a list: those of this network.

    A list may name layers of several networks (each uses its own); a name matching no layer of this
    network is skipped with a warning, and a list matching none is an error.
    """
    spatial = [info for info in layers if info.kind in SPATIAL]
    if pick == "conv":
        return spatial
    if pick == "last":
        return spatial[-1:]
    by_name = {info.name: info for info in layers}
    got = [by_name[name] for name in pick if name in by_name]
    missing = [name for name in pick if name not in by_name]
    if not got:
        raise SpecError(
            [problem(loc, f"none of {list(pick)} is a layer of {network}; layers: {list(by_name)}")]
        )
    if missing:
        log.warning("%s: %s: no layer(s) %s here; skipped", network, ".".join(map(str, loc)), missing)
    return got


def _one_layer(
    name: str | None,
    layers: Sequence[LayerInfo],
    problem: Callable[[tuple, str], str],
    loc: tuple,
    network: str,
) -> LayerInfo | None:
    if name is None:
        spatial = [info for info in layers if info.kind in SPATIAL]
        return spatial[-1] if spatial else None
    for info in layers:
        if name in (info.name, info.module):
            return info
    raise SpecError([problem(loc, f"no layer {name!r} in {network}; layers: {[i.name for i in layers]}")])


def _batch(inputs: Inputs, picks: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    labels = [int(inputs.mined.labels[i]) for i in picks]
    return torch.stack([inputs.image(i) for i in picks]), labels


def _round(a: np.ndarray, digits: int = 4) -> list:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


def _write_overlay(path: Path, picture: np.ndarray, heat: np.ndarray) -> None:
    codecs.write_png(path, blend(picture, heat, _OVERLAY_ALPHA))


# --- the techniques ----------------------------------------------------------------------------------


def _gradcam(a: AnalysesSpec, inputs: Inputs, out: Path, network: str) -> bool:
    lm = inputs.loaded
    info = _one_layer(a.gradcam.layer, lm.layers, inputs.problem, ("analyses", "gradcam", "layer"), network)
    if info is None:
        log.info("%s: Grad-CAM skipped: no conv layer", network)
        return False
    picks = probe_picks(inputs.mined.labels, a.gradcam.images)
    images, labels = _batch(inputs, picks)
    res = run_gradcam(lm, images, labels, layer=info, device=inputs.device)
    entries = []
    for j, idx in enumerate(picks):
        pic = inputs.picture(idx)
        names = {}
        for which, maps in (("true", res.true_maps), ("pred", res.pred_maps)):
            name = f"gradcam/{idx}-{which}.png"
            _write_overlay(out / name, pic, maps[j])
            names[which] = name
        entries.append(
            {
                "index": idx,
                "label": int(res.labels[j]),
                "predicted": int(res.predicted[j]),
                "true_prob": round(float(res.true_prob[j]), 4),
                "pred_prob": round(float(res.predicted_prob[j]), 4),
                "true_peak": round(float(res.true_peak[j]), 5),
                "pred_peak": round(float(res.pred_peak[j]), 5),
                "true_png": names["true"],
                "pred_png": names["pred"],
            }
        )
    inputs.images_used.update(picks)
    codecs.write_json(
        out / "gradcam.json",
        {"format": FORMAT, "layer": res.layer, "grid": list(res.grid), "images": entries},
    )
    return True


def occlusion_geometry(size: int | None, stride: int | None, input_size: int) -> tuple[int, int]:
    """The occluding square and its stride: the spec's, or 1/8 of the input and half of that.

    A fixed 8 px square with stride 4 (right for 64 px doodles) is 2,809 positions on a 224 px image:
    the cost grows with the square of the input side, so the defaults scale with it (issue 13) and
    every input size gets the same 15 x 15 map of the same relative coarseness.
    """
    square = size or max(2, round(input_size / 8))
    return square, stride or max(1, square // 2)


def erf_geometry(occluder: int | None, stride: int | None, input_size: int) -> tuple[int, int]:
    """Zhou et al. (2015) occlude 11 px squares at stride 3 on 227 px images: scaled to the input."""
    side = occluder or max(3, round(input_size * 11 / 227))
    return side, stride or max(1, round(input_size * 3 / 227))


def _occlusion(a: AnalysesSpec, inputs: Inputs, out: Path, network: str) -> bool:
    o, lm = a.occlusion, inputs.loaded
    info = _one_layer(o.layer, lm.layers, inputs.problem, ("analyses", "occlusion", "layer"), network)
    if info is None:
        return False
    size = lm.input_size
    square, stride = occlusion_geometry(o.size, o.stride, size)
    if square >= size:
        raise SpecError(
            [inputs.problem(("analyses", "occlusion", "size"), f"must be below the {size} px input")]
        )
    picks = probe_picks(inputs.mined.labels, o.images)
    images, labels = _batch(inputs, picks)
    res = occlusion(
        lm,
        images,
        labels,
        size=square,
        stride=stride,
        layer=info,
        device=inputs.device,
        batch_size=o.batch_size,
    )
    entries = [
        {
            "index": idx,
            "label": int(res.labels[j]),
            "predicted": int(res.predicted[j]),
            "unit": int(res.units[j]),
            "base_true_prob": round(float(res.base_true_prob[j]), 4),
            "base_pred_prob": round(float(res.base_pred_prob[j]), 4),
            "base_activation": round(float(res.base_activation[j]), 4),
            "true_prob": _round(res.true_prob[j]),
            "pred_prob": _round(res.pred_prob[j]),
            "activation": _round(res.activation[j]),
            "top_class": res.top_class[j].tolist(),
        }
        for j, idx in enumerate(picks)
    ]
    inputs.images_used.update(picks)
    doc = {
        "format": FORMAT,
        "size": res.size,
        "stride": res.stride,
        "fill": res.fill,
        "layer": res.layer,
        "rows": _round(res.rows, 2),
        "cols": _round(res.cols, 2),
        "images": entries,
    }
    codecs.write_json(out / "occlusion.json", doc)
    return True


def _embedding(a: AnalysesSpec, inputs: Inputs, out: Path) -> bool:
    feats = inputs.mined.features
    if feats is None or len(feats) == 0:
        return False
    coords = embed(feats, method=a.embedding.method, seed=inputs.seed, perplexity=a.embedding.perplexity)
    doc = {
        "format": FORMAT,
        "method": a.embedding.method if len(feats) >= 5 else "pca",
        "dim": int(feats.shape[1]),
        "x": _round(coords[:, 0], 4),
        "y": _round(coords[:, 1], 4),
        "labels": inputs.mined.labels.tolist(),
        "predicted": inputs.mined.top5[:, 0].tolist(),
    }
    codecs.write_json(out / "embedding.json", doc)
    return True


def _invariance(a: AnalysesSpec, inputs: Inputs, out: Path, network: str) -> bool:
    v, lm = a.invariance, inputs.loaded
    layers = None
    if v.layers is not None:
        layers = pick_layers(
            v.layers, lm.layers, inputs.problem, ("analyses", "invariance", "layers"), network
        )
    translations = v.translations
    if translations is None:  # up to a quarter of the image in 16 steps (Z&F: +-60 px of 224)
        step = max(1, lm.input_size // 32)
        translations = [float(t) for t in range(-8 * step, 8 * step + 1, step)]
    picks = probe_picks(inputs.mined.labels, v.images)
    images, labels = _batch(inputs, picks)
    res = invariance(
        lm,
        images,
        labels,
        layers=layers,
        translations=translations,
        rotations=v.rotations,
        scales=v.scales,
        device=inputs.device,
    )
    kinds = {
        kind: {
            "unit": c.unit,
            "amounts": _round(c.amounts, 3),
            "relative": _round(c.relative, 4),
            "true_prob": _round(c.true_prob, 4),
        }
        for kind, c in res.curves.items()
    }
    inputs.images_used.update(picks)
    codecs.write_json(
        out / "invariance.json",
        {
            "format": FORMAT,
            "layers": list(res.layers),
            "images": picks,
            "labels": res.labels.tolist(),
            "kinds": kinds,
        },
    )
    return True


def _stroke(a: AnalysesSpec, inputs: Inputs, out: Path) -> bool:
    s = a.stroke
    labels = inputs.mined.labels
    stats = stroke_mod.class_stats(
        (inputs.picture(i) for i in range(len(labels))),
        labels.tolist(),
        len(inputs.class_names),
        kind=s.kind,
        ink_threshold=s.ink_threshold,
        edge_threshold=s.edge_threshold,
    )
    rho_d = stroke_mod.density_correlation(inputs.weighted, stats.density)
    rho_c = stroke_mod.density_correlation(inputs.weighted, stats.complexity)
    overall = class_hist.overall_preference(list(inputs.weighted.values()))
    rho_all = stroke_mod.spearman(overall, stats.density)

    def clean(d: dict[str, float]) -> dict[str, float | None]:
        return {k: (None if np.isnan(x) else round(float(x), 4)) for k, x in d.items()}

    def nums(x: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else round(float(v), 5) for v in x]

    doc = {
        "format": FORMAT,
        "kind": stats.kind,
        "density": nums(stats.density),
        "complexity": nums(stats.complexity),
        "n": stats.n.astype(int).tolist(),
        "rho_density": clean(rho_d),
        "rho_complexity": clean(rho_c),
        "rho_overall": None if np.isnan(rho_all) else round(float(rho_all), 4),  # all layers' preference
    }
    codecs.write_json(out / "stroke.json", doc)
    return True


def _featvis(a: AnalysesSpec, inputs: Inputs, out: Path, network: str) -> bool:
    f, lm = a.featvis, inputs.loaded
    infos = pick_layers(f.layers, lm.layers, inputs.problem, ("analyses", "featvis", "layers"), network)
    layers: dict[str, Any] = {}
    for info in infos:
        units = inputs.shown.get(info.name, [])[: f.units]
        if not units:
            continue
        vis = featvis(
            lm,
            info,
            units,
            size=f.size,
            steps=f.steps,
            lr=f.lr,
            seed=inputs.seed,
            param=f.param,
            decorrelate=f.decorrelate,
            grayscale=f.grayscale,
            transforms=f.transforms,
            tv=f.tv,
            l2=f.l2,
            batch_units=f.batch_units,
            device=inputs.device,
        )
        for u, img in zip(vis.units.tolist(), vis.images, strict=True):
            codecs.write_webp(out / "featvis" / info.name / f"unit-{u:04d}.webp", img)
        layers[info.name] = {
            "units": vis.units.tolist(),
            "objective": _round(vis.objective, 4),
            "start_objective": _round(vis.start_objective, 4),
        }
    opts = {
        k: getattr(f, k)
        for k in ("steps", "lr", "param", "decorrelate", "grayscale", "transforms", "tv", "l2")
    }
    codecs.write_json(
        out / "featvis.json",
        {
            "format": FORMAT,
            "size": int(f.size or lm.input_size),
            "seed": inputs.seed,
            **opts,
            "layers": layers,
        },
    )
    return bool(layers)


def _erf(a: AnalysesSpec, inputs: Inputs, out: Path, network: str) -> bool:
    e, lm = a.empirical_rf, inputs.loaded
    infos = pick_layers(e.layers, lm.layers, inputs.problem, ("analyses", "empirical_rf", "layers"), network)
    layers: dict[str, Any] = {}
    occluder, stride = erf_geometry(e.occluder, e.stride, lm.input_size)
    for info in infos:
        if info.kind == "prob":
            continue
        topk = inputs.mined.layers[info.name]
        units = inputs.shown.get(info.name, [])[: e.units]
        got = {}
        for u in units:
            idx = [int(i) for i in topk.images[u] if i >= 0][: e.images]
            if not idx:
                continue
            n = len(idx)
            images = torch.stack([inputs.image(i) for i in idx])
            pos = np.stack([topk.rows[u][:n], topk.cols[u][:n]], axis=1)
            res = empirical_rf(
                lm,
                info,
                u,
                images,
                pos,
                occluder=occluder,
                stride=stride,
                device=inputs.device,
                batch_size=e.batch_size,
            )
            peak = float(res.map.max())
            name = f"erf/{info.name}/unit-{u:04d}.png"
            codecs.write_png(out / name, viridis(res.map / peak if peak > 0 else res.map))
            got[str(u)] = {
                "png": name,
                "map_size": int(res.map.shape[0]),
                "analytic_size": res.analytic_size,
                "effective_size": round(float(res.effective_size), 2),
                "centroid": [round(float(c), 2) for c in res.centroid],
                "mass": res.mass,
                "images": n,
                "peak": round(peak, 5),
            }
        if got:
            layers[info.name] = got
    codecs.write_json(
        out / "erf.json", {"format": FORMAT, "occluder": occluder, "stride": stride, "layers": layers}
    )
    return bool(layers)


__all__ = ["FORMAT", "NAMES", "Inputs", "check_layers", "pick_layers", "probe_picks", "run_techniques"]
