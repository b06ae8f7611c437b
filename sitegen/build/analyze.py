"""One checkpoint entry: check, mine (or resume), walk its layers, analyse, then write the entry.

:func:`_analyze` reads top-down: check the loaded model's units and analysis layers against the
spec, mine the probe set (every rank; :mod:`.mining`) or reload a killed build's tables; then, on
rank 0 (:func:`_store_entry`), each layer's class preferences and sprites (:func:`_map_layers`),
the filter grid, the activation maps, the registered analyses, and last the manifest that marks the
entry complete.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sitegen import __version__
from sitegen.analyses import class_hist
from sitegen.analyses.activation_maps import activation_maps
from sitegen.analyses.filters import filter_grid
from sitegen.analyses.registry import check_layers
from sitegen.analyses.weights import unit_weights
from sitegen.build.dataset import _ImageCache, _write_images, grayscale
from sitegen.build.mining import _mine_or_resume
from sitegen.build.names import _check_units, _Checkpoint, _shown_units
from sitegen.build.resume import _Resume, _topk_arrays
from sitegen.build.sprites import Progress, _advance, _boxes, _layer_sprites
from sitegen.build.techniques import _context, _run_analyses
from sitegen.build.write import _keep_activations, _write_actmaps
from sitegen.data import DataBundle
from sitegen.mine import LayerTopK, Mined
from sitegen.models import LoadedModel
from sitegen.spec import NetworkSpec, Spec
from sitegen.store import Store
from sitegen.store.manifest import (
    EVOLUTION_UNITS,
    CheckpointManifest,
    GridLayout,
    Provenance,
    SpriteLayout,
    created_now,
)

log = logging.getLogger("sitegen")


@dataclass(frozen=True, slots=True)
class _Entry:
    """One checkpoint entry being analysed on rank 0: what each step of :func:`_analyze` reads."""

    spec: Spec
    store: Store
    net_name: str
    ck: _Checkpoint
    loaded: LoadedModel
    bundle: DataBundle
    device: torch.device
    report: Progress
    label: str  # NETWORK@CHECKPOINT, for messages and progress bars
    ck_dir: Path
    image_cache: _ImageCache
    grey: bool  # the dataset's grayscale: filters and reconstructions drawn grey
    methods: list[str]  # the reconstruction methods, [] when turned off


@dataclass(frozen=True, slots=True)
class _Layers:
    """What the layer walk of one checkpoint gathered for the entry's files and its manifest."""

    mined_arrays: dict[str, np.ndarray]  # mined.npz
    class_arrays: dict[str, np.ndarray]  # classes.npz
    sprites: dict[str, SpriteLayout]
    weighted: dict[str, np.ndarray]  # layer -> rank-weighted class preference
    images: set[int]  # probe images the pages show
    t_patch: float
    t_recon: float


def _analyze(
    spec: Spec,
    store: Store,
    net_name: str,
    net: NetworkSpec,
    ck: _Checkpoint,
    loaded: LoadedModel,
    bundle: DataBundle,
    device: torch.device,
    key: str,
    report: Progress,
    *,
    ck_hash: str,
    lead: bool = True,
    techniques: bool = True,
) -> CheckpointManifest | None:
    """Check the loaded model's units and analysis layers against the spec, mine (every rank), then
    analyse and store (rank 0; other ranks return None)."""
    _check_units(spec, net_name, net, loaded.layers)
    check_layers(spec.analyses, loaded.layers, spec.problem, net_name)
    log.info(
        "%s@%s: mining %d layers on %d probe images", net_name, ck.name, len(loaded.layers), len(bundle.probe)
    )
    a = spec.analyses
    timings: dict[str, float] = {}
    label = f"{net_name}@{ck.name}"

    t = time.perf_counter()
    ck_dir = store.checkpoint_dir(net_name, ck.name)
    resume = _Resume(ck_dir / "partial", key)
    mined = _mine_or_resume(
        spec, loaded, bundle, device, resume, report, label, lead=lead, features=techniques
    )
    timings["mine"] = time.perf_counter() - t
    if not lead:
        return None
    methods: list[str] = list(a.reconstructions.methods) if a.reconstructions.enabled else []
    entry = _Entry(
        spec,
        store,
        net_name,
        ck,
        loaded,
        bundle,
        device,
        report,
        label,
        ck_dir,
        _ImageCache(bundle),
        grayscale(spec, bundle),
        methods,
    )
    return _store_entry(entry, net, mined, resume, timings, key=key, ck_hash=ck_hash, techniques=techniques)


def _store_entry(
    entry: _Entry,
    net: NetworkSpec,
    mined: Mined,
    resume: _Resume,
    timings: dict[str, float],
    *,
    key: str,
    ck_hash: str,
    techniques: bool,
) -> CheckpointManifest:
    """Rank 0's part of :func:`_analyze`: the layer walk, filters, activation maps and (``techniques``:
    checkpoints with pages) the registered analyses, then the entry's arrays, images and manifest."""
    spec, store, net_name, label = entry.spec, entry.store, entry.net_name, entry.label
    ck, loaded, bundle, methods = entry.ck, entry.loaded, entry.bundle, entry.methods
    a = spec.analyses
    accuracy = float((mined.top5[:, 0] == mined.labels).mean()) if len(mined.labels) else 0.0
    # Checkpoints without atlas pages (mined for diffs and feature evolution) get sprites only for the
    # units the evolution pages sample; their diffs compare those (issue 14, item 9: several epochs).
    shown = {
        info.name: _shown_units(net, info, spec.seed, sample=None if techniques else EVOLUTION_UNITS)
        for info in loaded.layers
    }
    walked = _map_layers(entry, mined, shown, resume)
    timings["patches"] = walked.t_patch
    timings["reconstructions"] = walked.t_recon
    images_needed = walked.images

    filters_layout = _write_filters(entry) if a.filters.enabled else None
    has_actmaps = False
    if a.activation_maps.enabled and a.activation_maps.images:
        t = time.perf_counter()
        images_needed.update(_write_activation_maps(entry, mined.labels))
        has_actmaps = True
        timings["activation_maps"] = time.perf_counter() - t

    ctx = _context(
        spec,
        net_name,
        label,
        loaded,
        bundle,
        entry.image_cache,
        entry.device,
        entry.report,
        labels=mined.labels,
        shown=shown,
        weighted=walked.weighted,
    )
    written: list[str] = []
    analysis_keys: dict[str, str] = {}
    if techniques:
        written, analysis_keys = _run_analyses(spec, store, ck.name, ctx, mined, key, timings, images_needed)

    store.write_arrays(net_name, ck.name, "weights", unit_weights(loaded.module, loaded.layers))
    store.write_arrays(net_name, ck.name, "mined", walked.mined_arrays)
    store.write_arrays(net_name, ck.name, "classes", walked.class_arrays)
    _write_images(store, bundle, images_needed)
    _keep_activations(entry.ck_dir, mined, label)
    manifest = CheckpointManifest(
        key=key,
        network=net_name,
        checkpoint=ck.name,
        provenance=_provenance(entry, ck_hash),
        timings={k: round(v, 3) for k, v in timings.items()},
        accuracy=accuracy,
        top_k=a.top_k,
        layers=[info.name for info in loaded.layers],
        shown_units=shown,
        sprites=walked.sprites,
        filters=filters_layout,
        activation_maps=has_actmaps,
        reconstructions=methods,
        techniques=written,
        analysis_keys=analysis_keys,
    )
    store.write_manifest(manifest)  # last: marks the entry complete
    resume.clear()
    log.info("%s: accuracy %.3f, %s", label, accuracy, ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return manifest


def _provenance(entry: _Entry, ck_hash: str) -> Provenance:
    """Where the entry came from: spec, network section, checkpoint and data hashes, versions, when."""
    spec = entry.spec
    return Provenance(
        spec_hash=spec.spec_hash(),
        section_hash=spec.section_hash("networks", entry.net_name),
        checkpoint_hash=ck_hash,
        dataset_fingerprint=entry.bundle.fingerprint,
        sitegen_version=__version__,
        torch_version=torch.__version__,
        seed=spec.seed,
        device=str(entry.device),
        created=created_now(),
    )


def _map_layers(entry: _Entry, mined: Mined, shown: dict[str, list[int]], resume: _Resume) -> _Layers:
    """Every layer's class preferences, patch boxes and sprites (finished layers of a resumed build
    are skipped), advancing one sprites bar and one reconstructions bar for the checkpoint."""
    labels, report, label = mined.labels, entry.report, entry.label
    num_classes = len(entry.bundle.class_names)
    mined_arrays: dict[str, np.ndarray] = {
        "predictions/top5": mined.top5,
        "predictions/top5_prob": mined.top5_prob,
    }
    class_arrays: dict[str, np.ndarray] = {"confusion": _confusion(labels, mined.top5[:, 0], num_classes)}
    images_needed: set[int] = set()
    sprites: dict[str, SpriteLayout] = {}
    layer_prefs = []
    weighted: dict[str, np.ndarray] = {}
    t_patch = t_recon = 0.0
    total_units = sum(len(units) for units in shown.values())
    done_units = 0
    # one bar for every reconstruction of the checkpoint, advanced inside layers (issue 13, item 6)
    total_pairs = len(entry.methods) * sum(
        int((mined.layers[name].images[units] >= 0).sum()) for name, units in shown.items()
    )
    done_pairs = 0
    for info in entry.loaded.layers:
        topk = mined.layers[info.name]
        pref = class_hist.class_preference(topk.images, labels, num_classes)
        layer_prefs.append(pref.weighted)
        weighted[info.name] = pref.weighted
        units = shown[info.name]
        done, layout = resume.layer(info.name, units)
        t = time.perf_counter()
        patches = _boxes(entry.image_cache, info, topk, entry.bundle.image_size)
        t_patch += time.perf_counter() - t
        if not done:
            layout, tp, tr = _sprites(
                entry,
                info,
                topk,
                units,
                pairs=functools.partial(_advance, report, f"reconstruct {label}", done_pairs, total_pairs),
                units_done=functools.partial(_advance, report, f"sprites {label}", done_units, total_units),
            )
            t_patch, t_recon = t_patch + tp, t_recon + tr
            resume.finish_layer(info.name, units, layout)
        done_pairs += len(entry.methods) * int((topk.images[units] >= 0).sum())
        done_units += len(units)
        report(f"sprites {label}", done_units, total_units)
        if layout is not None:
            sprites[info.name] = layout
        images_needed.update(int(i) for i in topk.images[units].ravel() if i >= 0)
        images_needed.update(int(i) for i in pref.exemplars.ravel() if i >= 0)
        mined_arrays |= _topk_arrays(topk, info.name)
        mined_arrays[f"{info.name}/boxes"] = patches.boxes
        class_arrays |= _class_arrays(info.name, pref)
    class_arrays["overall/weighted"] = class_hist.overall_preference(layer_prefs)
    return _Layers(mined_arrays, class_arrays, sprites, weighted, images_needed, t_patch, t_recon)


def _sprites(
    entry: _Entry,
    info: Any,
    topk: LayerTopK,
    units: list[int],
    *,
    pairs: Callable[[int, int], None],
    units_done: Callable[[int, int], None],
) -> tuple[SpriteLayout | None, float, float]:
    """One layer's sprites (:func:`_layer_sprites`): its layout, seconds on patches and on reconstructions."""
    a = entry.spec.analyses
    # fc and prob units see the whole image: their "patch" is the probe image itself, stored once
    # under images/ and referenced by the pages, not baked into every unit's sprite (issue 13).
    whole = info.kind in ("linear", "prob")
    names = [*([] if whole else ["patches"]), *entry.methods]
    return _layer_sprites(
        entry.store,
        entry.net_name,
        entry.ck.name,
        info,
        topk,
        units,
        loaded=entry.loaded,
        image_cache=entry.image_cache,
        image_size=entry.bundle.image_size,
        methods=entry.methods,
        names=names,
        top_k=a.top_k,
        batch_size=a.reconstructions.batch_size,
        max_cell=a.reconstructions.cell,
        device=entry.device,
        grayscale=entry.grey,
        pairs=pairs,
        units_done=units_done,
    )


def _confusion(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 ``[C, C]``: row = true class, column = top-1 prediction."""
    return (
        np.bincount(labels * num_classes + predicted, minlength=num_classes**2)
        .reshape(num_classes, num_classes)
        .astype(np.int64)
    )


def _class_arrays(layer: str, pref: Any) -> dict[str, np.ndarray]:
    """One layer's class preference (:func:`class_hist.class_preference`) as ``classes.npz`` arrays."""
    return {
        f"{layer}/per_rank": pref.per_rank,
        f"{layer}/weighted": pref.weighted,
        f"{layer}/purity": pref.purity,
        f"{layer}/dominant": pref.dominant,
        f"{layer}/exemplars": pref.exemplars,
    }


def _write_filters(entry: _Entry) -> GridLayout | None:
    """``filters.png``: the first conv layer's filters as one grid (None: the network has none)."""
    grid = filter_grid(entry.loaded.module, grayscale=entry.grey)
    if grid is None:
        return None
    entry.store.write_png(entry.ck_dir / "filters.png", grid.image)
    return GridLayout(cell=grid.cell, cols=grid.cols, rows=grid.rows, count=grid.count, layer=grid.layer)


def _write_activation_maps(entry: _Entry, labels: np.ndarray) -> list[int]:
    """``actmaps/`` and ``actmaps.json`` for the spec's picks of probe images; returns those images."""
    a = entry.spec.analyses
    picks = class_hist.probe_picks(labels, a.activation_maps.images)
    maps = activation_maps(
        entry.loaded,
        entry.image_cache.tensor,
        picks,
        channels=a.activation_maps.channels,
        device=entry.device,
        labels=[int(labels[i]) for i in picks],  # issue 14: unset, every map read "scribble"
    )
    _write_actmaps(entry.store, entry.ck_dir, maps)
    return picks
