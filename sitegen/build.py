"""The orchestrator: spec → data → models → (training) → mining → analyses → store → site.

Reads top-down like mkdocs' build(): gather inputs, compute what the store does
not already hold (each checkpoint entry keyed by a content hash), then render.
No exit codes here; user errors are raised as SitegenError subclasses.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import shutil
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sitegen import __version__
from sitegen._distributed import barrier, init_from_env, rank_world
from sitegen.analyses import class_hist, registry
from sitegen.analyses.activation_maps import activation_maps
from sitegen.analyses.filters import filter_grid
from sitegen.analyses.patches import extract_patches, sprite
from sitegen.analyses.reconstruct import reconstruct_topk
from sitegen.analyses.registry import Context, check_layers
from sitegen.analyses.weights import unit_weights
from sitegen.compare import write_compares
from sitegen.data import (
    DataBundle,
    build_data,
    class_counts,
    is_grayscale,
    probe_image,
    probe_labels,
    resolve_normalization,
)
from sitegen.diff import DiffSide, diff_name, diff_stores, write_diff
from sitegen.errors import DeviceError, SpecError, StoreError
from sitegen.mine import LayerTopK, Mined, mine
from sitegen.models import (
    LoadedModel,
    build_model,
    check_arch,
    file_hash,
    layer_table,
    load_model,
    weights_meta,
)
from sitegen.plan import check_spec_against_models, unit_problems
from sitegen.spec import NetworkSpec, Spec, load_spec
from sitegen.store import Store, codecs
from sitegen.store.activations import ACTIVATIONS, ACTIVATIONS_JSON, Activations, stored_activations
from sitegen.store.manifest import (
    EVOLUTION_UNITS,
    BuildRecord,
    CheckpointManifest,
    CheckpointRef,
    DatasetRecord,
    DiffRef,
    EpochRecord,
    GridLayout,
    LayerRecord,
    NetworkRecord,
    Normalization,
    Provenance,
    SpriteLayout,
    evenly_spaced,
)
from sitegen.train import train, train_key

log = logging.getLogger("sitegen")

Progress = Callable[[str, int, int], None]
SAMPLES_PER_CLASS = 4  # thumbnails per class on the dataset card


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build did: where things are, how long it took, how much was cached."""

    store: Path
    site: Path | None
    seconds: float
    computed: int
    cached: int

    @property
    def summary(self) -> str:
        return f"{self.computed} checkpoint(s) computed, {self.cached} cached"


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    name: str
    source: str | None  # file path, torchvision weights name, or None (random init)
    epoch: int | None = None


def build(spec: Spec, *, progress: Progress | None = None, render: bool = True) -> BuildResult:
    """Build everything ``spec`` describes into ``spec.output`` (store/ and site/).

    Args:
        spec: a validated spec (:func:`sitegen.spec.load_spec`).
        progress: called as ``progress(label, done, total)`` during long work.
        render: also render the site (``output/site``) at the end.

    Returns:
        A :class:`BuildResult`.
    """
    t0 = time.perf_counter()
    report = progress or (lambda *_: None)
    device = resolve_device(spec)
    _check_archs(spec)
    check_spec_against_models(spec)  # every name, the output folder: all problems before any work
    # Under torchrun every rank mines its shard of the probe set; rank 0 alone trains, analyses,
    # writes the store and renders (DESIGN.md, "Beyond one machine").
    rank, _ = init_from_env(device)
    lead = rank == 0
    store = Store(spec.output / "store")
    timings: dict[str, float] = {}

    used = list(dict.fromkeys(net.dataset for net in spec.networks.values()))
    bundles: dict[str, DataBundle] = {}
    for name in used:
        t = time.perf_counter()
        bundles[name] = build_data(name, spec.datasets[name], spec.seed, cache_dir=spec.output / "cache")
        if lead:
            _write_dataset(store, bundles[name], spec)
        timings[f"data {name}"] = time.perf_counter() - t

    computed = cached = 0
    for net_name, net in spec.networks.items():
        t = time.perf_counter()
        c, k = _build_network(spec, store, net_name, net, bundles[net.dataset], device, report, lead=lead)
        computed, cached = computed + c, cached + k
        timings[f"network {net_name}"] = time.perf_counter() - t

    if not lead:
        return BuildResult(store.root, None, time.perf_counter() - t0, computed, cached)
    t = time.perf_counter()
    write_compares(store, list(spec.networks))  # cross-network CKA (issue 15): needs every entry
    timings["compare"] = time.perf_counter() - t
    t = time.perf_counter()
    diffs = _build_diffs(spec, store)
    timings["diffs"] = time.perf_counter() - t
    store.write_build(
        BuildRecord(
            title=spec.title,
            spec_hash=spec.spec_hash(),
            created=_now(),
            sitegen_version=__version__,
            torch_version=torch.__version__,
            device=str(device),
            timings={k: round(v, 3) for k, v in timings.items()},
            datasets=used,
            networks=list(spec.networks),
            diffs=diffs,
        )
    )
    site = None
    if render:
        from sitegen.render import render_site
        from sitegen.render.sizes import site_sizes, size_report

        site = spec.output / "site"
        render_site(store.root, site, progress=lambda d, n: report("render", d, n))
        _write_redirect(spec.output)
        lines, warnings = size_report(site_sizes(site, list(spec.networks)))
        for line in lines:
            log.info("%s", line)
        for warning in warnings:
            log.warning("%s", warning)
    return BuildResult(store.root, site, time.perf_counter() - t0, computed, cached)


# --- devices and architectures -----------------------------------------------------------------------


def resolve_device(spec: Spec) -> torch.device:
    """``auto`` → cuda, then mps, then cpu; an explicit device must exist (DeviceError otherwise)."""
    want = spec.device
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if want == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if want.startswith("cuda"):
        n = torch.cuda.device_count()
        index = int(want.split(":")[1]) if ":" in want else 0
        if index >= n:
            found = f"{n} CUDA device(s)" if n else "no CUDA device (torch.cuda.is_available() is False)"
            raise DeviceError(
                spec.problem(
                    ("device",), f"{want!r} requested but this machine has {found}; use device: auto or cpu"
                )
            )
    if want == "mps" and not has_mps:
        raise DeviceError(
            spec.problem(("device",), "'mps' requested but not available; use device: auto or cpu")
        )
    return torch.device(want)


def _check_archs(spec: Spec) -> None:
    problems = []
    for name, net in spec.networks.items():
        message = check_arch(net.arch)
        if message:
            problems.append(spec.problem(("networks", name, "arch"), message))
    if problems:
        raise SpecError(problems)


def layer_table_for(target: str, *, spec_path: Path, input_size: int | None, num_classes: int) -> tuple:
    """The layer table of a spec network (by name) or of an arch string (``sitegen layers``)."""
    if spec_path.is_file() and ":" not in target:
        spec = load_spec(spec_path)
        if target in spec.networks:
            net = spec.networks[target]
            ds = spec.datasets[net.dataset]
            _check_archs(spec)
            size = input_size or ds.image_size
            classes = _class_count_hint(ds, num_classes)
            return layer_table(build_model(net.arch, classes, input_size=size), size, net.layers)
    message = check_arch(target)
    if message:
        raise SpecError([f"{target}: {message}"])
    size = input_size or 224
    return layer_table(build_model(target, num_classes, input_size=size), size, "auto")


def _class_count_hint(ds, default: int) -> int:
    """Classes of a dataset without loading it (only the head's width depends on it)."""
    if not ds.builtin:
        return default
    from sitegen.doodles import CLASSES

    if ds.classes == "all":
        return len(CLASSES)
    if isinstance(ds.classes, list):
        return len(ds.classes)
    return min(ds.classes.top, len(CLASSES))


# --- datasets ----------------------------------------------------------------------------------------


def _write_dataset(store: Store, bundle: DataBundle, spec: Spec) -> None:
    labels = probe_labels(bundle)
    counts = class_counts(bundle)
    samples = [
        np.flatnonzero(labels == c)[:SAMPLES_PER_CLASS].tolist() for c in range(len(bundle.class_names))
    ]
    ds = spec.datasets[bundle.name]
    store.write_dataset(
        DatasetRecord(
            name=bundle.name,
            source=f"builtin:{ds.builtin}" if ds.builtin else str(ds.path or ds.probe_path),
            fingerprint=bundle.fingerprint,
            class_names=list(bundle.class_names),
            image_size=bundle.image_size,
            n_train=len(bundle.train),
            n_probe=len(bundle.probe),
            counts=[tuple(counts[c]) for c in bundle.class_names],
            samples=samples,
            grayscale=grayscale(spec, bundle),
        )
    )
    np.save(store.dataset_dir(bundle.name) / "labels.npy", labels)
    _write_images(store, bundle, {i for s in samples for i in s})


def grayscale(spec: Spec, bundle: DataBundle) -> bool:
    """The spec's ``grayscale:`` for this dataset, else detected from its probe images."""
    said = spec.datasets[bundle.name].grayscale
    return is_grayscale(bundle.probe) if said is None else said


def _write_images(store: Store, bundle: DataBundle, indices: set[int]) -> None:
    """Probe images the pages show, un-normalized PNG; written once (same fingerprint, same pixels)."""
    fp_file = store.dataset_dir(bundle.name) / "images" / "FINGERPRINT"
    if fp_file.is_file() and fp_file.read_text() != bundle.fingerprint:
        for old in fp_file.parent.glob("*.png"):
            old.unlink()
    fp_file.parent.mkdir(parents=True, exist_ok=True)
    fp_file.write_text(bundle.fingerprint)
    for i in sorted(indices):
        path = store.image_path(bundle.name, int(i))
        if i >= 0 and not path.is_file():
            store.write_png(path, probe_image(bundle, int(i)))


# --- networks ----------------------------------------------------------------------------------------


def _build_network(
    spec: Spec,
    store: Store,
    net_name: str,
    net: NetworkSpec,
    bundle: DataBundle,
    device: torch.device,
    report: Progress,
    *,
    lead: bool = True,
) -> tuple[int, int]:
    num_classes = len(bundle.class_names)
    meta = weights_meta(net.arch, net.weights) if net.weights else None
    norm_kind, mean, std = resolve_normalization(net.normalization, bundle, meta)

    history: tuple = ()
    if net.train:
        torch.manual_seed(spec.seed)
        module = build_model(net.arch, num_classes, input_size=bundle.image_size)
        key = train_key(
            net.train, arch=net.arch, fingerprint=bundle.fingerprint, mean=mean, std=std, seed=spec.seed
        )
        if not lead:
            barrier()  # rank 0 trains; the others then find its checkpoints cached
        result = train(
            module,
            bundle.train,
            bundle.probe,
            net.train,
            key=key,
            mean=mean,
            std=std,
            out_dir=spec.output / "checkpoints" / net_name,
            seed=spec.seed,
            device=device,
            progress=lambda _, d, n: report(f"train {net_name}", d, n),
        )
        if lead:
            barrier()
        log.info("%s: training %s", net_name, "cached" if result.cached else "done")
        history = result.history
        checkpoints = [
            _Checkpoint(n, str(p), e.epoch) for (n, p), e in zip(result.checkpoints, history, strict=True)
        ]
    elif net.checkpoints:
        checkpoints = [_Checkpoint(n, str(p)) for n, p in net.checkpoints.items()]
    elif net.weights:
        checkpoints = [
            _Checkpoint(Path(net.weights).stem if Path(net.weights).suffix else net.weights, net.weights)
        ]
    else:
        log.warning(
            "%s: no weights, checkpoints or train block: mapping a randomly initialised network", net_name
        )
        checkpoints = [_Checkpoint("init", None)]

    names = [c.name for c in checkpoints]
    atlas = _atlas_names(spec, net_name, net, names)
    wanted = set(atlas) | _diff_names(spec, net_name, names) | _evolution_names(spec, net_name, net, names)

    def load(ck: _Checkpoint) -> LoadedModel:
        torch.manual_seed(spec.seed)  # "init" checkpoints: the same random weights every build
        return load_model(
            net,
            num_classes=num_classes,
            input_size=bundle.image_size,
            checkpoint=ck.source,
            mean=mean,
            std=std,
            normalization=norm_kind,
        )

    cached_manifest: CheckpointManifest | None = None
    accuracy: dict[str, float] = {e_name: e.probe_acc for e_name, e in zip(names, history, strict=False)}
    computed = cached = 0
    layers: list[LayerRecord] = []
    params = 0
    for ck in checkpoints:
        if ck.name not in wanted:
            continue
        ck_hash = _checkpoint_hash(spec, ck)
        in_atlas = ck.name in atlas  # the other techniques only for checkpoints with pages
        key = _entry_key(spec, net_name, ck_hash, bundle.fingerprint, mean, std, atlas=in_atlas)
        if store.cached(net_name, ck.name, key):  # no model load: a no-op rebuild stays seconds
            log.info("%s@%s: cached", net_name, ck.name)
            cached_manifest = store.read_manifest(net_name, ck.name)
            if lead and in_atlas and _stale_analyses(spec, cached_manifest):  # issue 12: per-analysis keys
                cached_manifest = _refresh_analyses(
                    spec, store, net_name, ck, partial(load, ck), bundle, device, cached_manifest, report
                )
            accuracy[ck.name] = cached_manifest.accuracy
            cached += 1
            continue
        loaded = load(ck)
        _check_units(spec, net_name, net, loaded.layers)
        check_layers(spec.analyses, loaded.layers, spec.problem, net_name)
        layers, params = _table(loaded)
        log.info(
            "%s@%s: mining %d layers on %d probe images",
            net_name,
            ck.name,
            len(loaded.layers),
            len(bundle.probe),
        )
        manifest = _analyze(
            spec,
            store,
            net_name,
            net,
            ck,
            loaded,
            bundle,
            device,
            key,
            report,
            ck_hash=ck_hash,
            lead=lead,
            techniques=in_atlas,
        )
        computed += 1
        if manifest is not None:
            accuracy[ck.name] = manifest.accuracy

    if not lead:
        return computed, cached
    if not layers:  # everything cached: the stored record, if it matches the entries, else one load
        layers, params = _stored_layers(store, net_name, cached_manifest) or _table(load(checkpoints[-1]))

    store.write_network(
        NetworkRecord(
            name=net_name,
            arch=net.arch,
            dataset=net.dataset,
            weights=net.weights,
            params=params,
            input_size=bundle.image_size,
            normalization=Normalization(kind=norm_kind, mean=mean, std=std),
            layers=layers,
            checkpoints=[
                CheckpointRef(
                    name=c.name, accuracy=accuracy.get(c.name), atlas=c.name in atlas, epoch=c.epoch
                )
                for c in checkpoints
            ],
            training=[EpochRecord(**asdict(e)) for e in history],
        )
    )
    return computed, cached


def _stored_layers(
    store: Store, net_name: str, manifest: CheckpointManifest | None
) -> tuple[list[LayerRecord], int] | None:
    """The layer table of the stored network record, when it matches a cached entry's layers."""
    try:
        record = store.read_network(net_name)
    except StoreError:
        return None
    if manifest is None or [lay.name for lay in record.layers] != manifest.layers:
        return None
    return record.layers, record.params


def _table(loaded: LoadedModel) -> tuple[list[LayerRecord], int]:
    return [LayerRecord(**info.to_dict()) for info in loaded.layers], loaded.params


def _atlas_names(spec: Spec, net_name: str, net: NetworkSpec, names: list[str]) -> list[str]:
    if net.atlas == "last":
        return names[-1:]
    if net.atlas == "all":
        return names
    return _known_checkpoints(spec, net_name, "atlas", net.atlas, names)


def _evolution_names(spec: Spec, net_name: str, net: NetworkSpec, names: list[str]) -> set[str]:
    if net.evolution is True:
        return set(names)
    if not net.evolution:
        return set()
    return set(_known_checkpoints(spec, net_name, "evolution", net.evolution, names))


def _known_checkpoints(spec: Spec, net_name: str, key: str, listed: list[str], names: list[str]) -> list[str]:
    """``listed`` (the spec's ``networks.<net>.<key>``) when every name is a checkpoint, else SpecError."""
    unknown = [n for n in listed if n not in names]
    if unknown:
        raise SpecError(
            [
                spec.problem(
                    ("networks", net_name, key), f"unknown checkpoints {unknown}; this network has {names}"
                )
            ]
        )
    return list(listed)


def _diff_names(spec: Spec, net_name: str, names: list[str]) -> set[str]:
    wanted, problems = set(), []
    for i, d in enumerate(spec.diffs):
        for side in ("a", "b"):
            ref_net, _, ck = getattr(d, side).partition("@")
            if ref_net != net_name:
                continue
            if ck not in names:
                problems.append(
                    spec.problem(("diffs", i, side), f"{net_name} has no checkpoint {ck!r}; it has {names}")
                )
            wanted.add(ck)
    if problems:
        raise SpecError(problems)
    return wanted


def _build_diffs(spec: Spec, store: Store) -> list[DiffRef]:
    """The spec's diffs (cheap numpy over the store, recomputed every build), plus diffs filed
    earlier by ``sitegen diff`` whose files still exist."""
    refs: list[DiffRef] = []
    for d in spec.diffs:
        a = DiffSide(store.root, *d.a.split("@", 1))
        b = DiffSide(store.root, *d.b.split("@", 1))
        name = diff_name(a, b)
        write_diff(store, name, diff_stores(a, b))
        refs.append(DiffRef(a=d.a, b=d.b, name=name))
        log.info("diff %s: computed", name)
    if (store.root / "build.json").is_file():
        try:
            previous = store.read_build().diffs
        except StoreError:
            previous = []
        names = {r.name for r in refs}
        refs += [
            r
            for r in previous
            if r.name not in names and (store.root / "diffs" / r.name / "diff.json").is_file()
        ]
    return refs


def _checkpoint_hash(spec: Spec, ck: _Checkpoint) -> str:
    """The checkpoint file's content hash; a weights name or random init is named (with the seed)."""
    if ck.source and Path(ck.source).is_file():
        return file_hash(Path(ck.source))
    return f"{ck.source or 'init'}:{spec.seed}"


def _entry_key(
    spec: Spec, net_name: str, source: str, fingerprint: str, mean: tuple, std: tuple, *, atlas: bool = True
) -> str:
    """Content hash of everything a checkpoint's store entry depends on (``source``: the checkpoint's).

    The registered analyses' sections are left out: each analysis document has its own key
    (:func:`_analysis_key`), so changing ``analyses.featvis.steps`` recomputes featvis only (issue 12).
    """
    shared = spec.analyses.model_dump(mode="json", exclude=registry.technique_fields())
    blob = json.dumps(
        {
            "network": spec.section_hash("networks", net_name),
            "analyses": hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16],
            "checkpoint": source,
            "data": fingerprint,
            "mean": list(mean),
            "std": list(std),
            "seed": spec.seed,
            "sitegen": __version__,
            "atlas": atlas,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# --- one checkpoint: mine, analyse, store ------------------------------------------------------------


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
    """Mine (every rank), then analyse and store (rank 0; other ranks return None)."""
    a = spec.analyses
    timings: dict[str, float] = {}
    label = f"{net_name}@{ck.name}"
    num_classes = len(bundle.class_names)

    t = time.perf_counter()
    ck_dir = store.checkpoint_dir(net_name, ck.name)
    resume = _Resume(ck_dir / "partial", key)
    # per-image activations (issue 15): mined into partial/, moved into the entry with the manifest
    acts_path = resume.root / ACTIVATIONS if a.activations.enabled else None
    mined = resume.mined(activations=acts_path is not None) if lead and rank_world()[1] == 1 else None
    if mined is None:
        mined = mine(
            loaded,
            bundle.probe,
            k=a.top_k,
            batch_size=a.batch_size,
            device=str(device),
            num_workers=a.num_workers,
            autocast=a.autocast,
            features=techniques and a.embedding.enabled and _has_linear(loaded),
            progress=lambda d, n: report(f"mine {label}", d, n),
            activations=acts_path,
        )
        if lead:
            resume.save_mined(mined)
    else:
        log.info("%s: resuming (mined results and %d finished layer(s) kept)", label, resume.done_layers)
    timings["mine"] = time.perf_counter() - t
    if not lead:
        return None
    labels = mined.labels
    accuracy = float((mined.top5[:, 0] == labels).mean()) if len(labels) else 0.0

    mined_arrays: dict[str, np.ndarray] = {
        "predictions/top5": mined.top5,
        "predictions/top5_prob": mined.top5_prob,
    }
    class_arrays: dict[str, np.ndarray] = {
        "confusion": np.bincount(labels * num_classes + mined.top5[:, 0], minlength=num_classes**2)
        .reshape(num_classes, num_classes)
        .astype(np.int64)
    }
    images_needed: set[int] = set()
    sprites: dict[str, SpriteLayout] = {}
    layer_prefs = []
    weighted: dict[str, np.ndarray] = {}
    methods: list[str] = list(a.reconstructions.methods) if a.reconstructions.enabled else []
    image_cache = _ImageCache(bundle)
    grey = grayscale(spec, bundle)

    t_patch = t_recon = 0.0
    # Checkpoints without atlas pages (mined for diffs and feature evolution) get sprites only for the
    # units the evolution pages sample; their diffs compare those (issue 14, item 9: several epochs).
    shown = {
        info.name: _shown_units(net, info, spec.seed, sample=None if techniques else EVOLUTION_UNITS)
        for info in loaded.layers
    }
    total_units = sum(len(units) for units in shown.values())
    done_units = 0
    # one bar for every reconstruction of the checkpoint, advanced inside layers (issue 13, item 6)
    total_pairs = len(methods) * sum(
        int((mined.layers[name].images[units] >= 0).sum()) for name, units in shown.items()
    )
    done_pairs = 0
    for info in loaded.layers:
        topk = mined.layers[info.name]
        pref = class_hist.class_preference(topk.images, labels, num_classes)
        layer_prefs.append(pref.weighted)
        weighted[info.name] = pref.weighted
        units = shown[info.name]

        # fc and prob units see the whole image: their "patch" is the probe image itself, stored once
        # under images/ and referenced by the pages, not baked into every unit's sprite (issue 13).
        whole = info.kind in ("linear", "prob")
        names = [*([] if whole else ["patches"]), *methods]
        done, layout = resume.layer(info.name, units)
        t = time.perf_counter()
        # boxes for every unit (cheap arithmetic, no images): the store keeps them for all units
        patches = extract_patches(image_cache.uint8, info, topk, bundle.image_size, units=[])
        t_patch += time.perf_counter() - t
        if not done:
            layout, tp, tr = _layer_sprites(
                store,
                net_name,
                ck.name,
                info,
                topk,
                units,
                loaded=loaded,
                image_cache=image_cache,
                image_size=bundle.image_size,
                methods=methods,
                names=names,
                top_k=a.top_k,
                batch_size=a.reconstructions.batch_size,
                device=device,
                grayscale=grey,
                pairs=functools.partial(_advance, report, f"reconstruct {label}", done_pairs, total_pairs),
                units_done=functools.partial(_advance, report, f"sprites {label}", done_units, total_units),
            )
            t_patch, t_recon = t_patch + tp, t_recon + tr
            resume.finish_layer(info.name, units, layout)
        done_pairs += len(methods) * int((topk.images[units] >= 0).sum())
        done_units += len(units)
        report(f"sprites {label}", done_units, total_units)
        if layout is not None:
            sprites[info.name] = layout
        images_needed.update(int(i) for i in topk.images[units].ravel() if i >= 0)
        images_needed.update(int(i) for i in pref.exemplars.ravel() if i >= 0)

        for field in ("values", "images", "rows", "cols"):
            mined_arrays[f"{info.name}/{field}"] = getattr(topk, field)
        mined_arrays[f"{info.name}/boxes"] = patches.boxes
        class_arrays.update(
            {
                f"{info.name}/per_rank": pref.per_rank,
                f"{info.name}/weighted": pref.weighted,
                f"{info.name}/purity": pref.purity,
                f"{info.name}/dominant": pref.dominant,
                f"{info.name}/exemplars": pref.exemplars,
            }
        )
    class_arrays["overall/weighted"] = class_hist.overall_preference(layer_prefs)
    timings["patches"] = t_patch
    timings["reconstructions"] = t_recon

    filters_layout = None
    if a.filters.enabled:
        grid = filter_grid(loaded.module, grayscale=grey)
        if grid is not None:
            store.write_png(ck_dir / "filters.png", grid.image)
            filters_layout = GridLayout(
                cell=grid.cell, cols=grid.cols, rows=grid.rows, count=grid.count, layer=grid.layer
            )
    has_actmaps = False
    if a.activation_maps.enabled and a.activation_maps.images:
        t = time.perf_counter()
        picks = class_hist.probe_picks(labels, a.activation_maps.images)
        maps = activation_maps(
            loaded,
            image_cache.tensor,
            picks,
            channels=a.activation_maps.channels,
            device=device,
            labels=[int(labels[i]) for i in picks],  # issue 14: unset, every map read "scribble"
        )
        _write_actmaps(store, ck_dir, maps)
        images_needed.update(picks)
        has_actmaps = True
        timings["activation_maps"] = time.perf_counter() - t

    ctx = Context(
        loaded=loaded,
        network=net_name,
        image=image_cache.tensor,
        picture=image_cache.uint8,
        class_names=bundle.class_names,
        labels=labels,
        shown=shown,
        weighted=weighted,
        device=device,
        seed=spec.seed,
        problem=spec.problem,
        progress=lambda what, d, n: report(f"{what} {label}", d, n),
    )
    written: list[str] = []
    analysis_keys: dict[str, str] = {}
    if techniques:
        written, analysis_keys = _run_analyses(spec, store, ck.name, ctx, mined, key, timings, images_needed)

    store.write_arrays(net_name, ck.name, "weights", unit_weights(loaded.module, loaded.layers))
    store.write_arrays(net_name, ck.name, "mined", mined_arrays)
    store.write_arrays(net_name, ck.name, "classes", class_arrays)
    _write_images(store, bundle, images_needed)
    _keep_activations(ck_dir, mined, label)
    manifest = CheckpointManifest(
        key=key,
        network=net_name,
        checkpoint=ck.name,
        provenance=Provenance(
            spec_hash=spec.spec_hash(),
            section_hash=spec.section_hash("networks", net_name),
            checkpoint_hash=ck_hash,
            dataset_fingerprint=bundle.fingerprint,
            sitegen_version=__version__,
            torch_version=torch.__version__,
            seed=spec.seed,
            device=str(device),
            created=_now(),
        ),
        timings={k: round(v, 3) for k, v in timings.items()},
        accuracy=accuracy,
        top_k=a.top_k,
        layers=[info.name for info in loaded.layers],
        shown_units=shown,
        sprites=sprites,
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


# --- the registered analyses (issue 12) ---------------------------------------------------------------


def _analysis_key(entry_key: str, spec: Spec, kind: registry.Kind) -> str:
    """One analysis document's cache key: its checkpoint entry's inputs plus its own params."""
    params = spec.section_hash("analyses", kind.field)
    blob = json.dumps({"entry": entry_key, "kind": kind.name, "params": params})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _stale_analyses(spec: Spec, manifest: CheckpointManifest) -> list[str]:
    """Kinds whose stored state is not the spec's: enabled ones whose document (or recorded skip) is
    from other params, and ones the manifest holds that are no longer enabled (to drop)."""
    keys = manifest.analysis_keys
    kinds = registry.enabled(spec.analyses)
    stale = [k.name for k in kinds if keys.get(k.name) != _analysis_key(manifest.key, spec, k)]
    on = {k.name for k in kinds}
    return stale + sorted({*keys, *manifest.techniques} - on)


def _run_analyses(
    spec: Spec,
    store: Store,
    ck_name: str,
    ctx: Context,
    mined: Mined,
    entry_key: str,
    timings: dict[str, float],
    images: set[int],
    *,
    current: CheckpointManifest | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Run every enabled analysis in registry order and store its document.

    ``current``: a cached entry's manifest: analyses whose key it holds are kept, not rerun. Adds the
    probe images the documents show to ``images`` and each run's seconds to ``timings``.

    Returns:
        The kinds written (``manifest.techniques``) and every enabled kind's key (a kind that had
        nothing to show, e.g. Grad-CAM on a net without conv layers, is keyed but not listed).
    """
    done: list[str] = []
    keys: dict[str, str] = {}
    out = store.checkpoint_dir(ctx.network, ck_name)
    for kind in registry.enabled(spec.analyses):
        key = keys[kind.name] = _analysis_key(entry_key, spec, kind)
        if current is not None and current.analysis_keys.get(kind.name) == key:
            if kind.name in current.techniques:
                done.append(kind.name)
            if kind.name in current.timings:
                timings[kind.name] = current.timings[kind.name]
            continue
        module = kind.analysis()
        t = time.perf_counter()
        result = module.run(ctx, mined, kind.settings(spec.analyses))
        if result is not None:
            doc = module.save(ctx, result, out)
            store.write_analysis(ctx.network, ck_name, doc)
            images.update(doc.probe_images())
            done.append(kind.name)
        timings[kind.name] = time.perf_counter() - t
    return done, keys


def _refresh_analyses(
    spec: Spec,
    store: Store,
    net_name: str,
    ck: _Checkpoint,
    load: Callable[[], LoadedModel],
    bundle: DataBundle,
    device: torch.device,
    manifest: CheckpointManifest,
    report: Progress,
) -> CheckpointManifest:
    """A cached entry whose analyses changed (params, or turned on/off): rerun those analyses only,
    from the stored mining results (no mining, patches or reconstructions), and rewrite the manifest."""
    a = spec.analyses
    label = f"{net_name}@{ck.name}"
    stale = _stale_analyses(spec, manifest)
    log.info("%s: analyses changed: %s", label, ", ".join(sorted(stale)))
    on = {k.name for k in registry.enabled(a)}
    if not on & set(stale):  # only turned off: drop them from the manifest, nothing to compute
        keys = {k: v for k, v in manifest.analysis_keys.items() if k in on}
        updated = manifest.model_copy(
            update={"techniques": [t for t in manifest.techniques if t in on], "analysis_keys": keys}
        )
        store.write_manifest(updated)
        return updated
    loaded = load()
    check_layers(a, loaded.layers, spec.problem, net_name)
    arrays = store.read_arrays(net_name, ck.name, "mined")
    classes = store.read_arrays(net_name, ck.name, "classes")
    fields = ("values", "images", "rows", "cols")
    features = None
    if "embedding" in stale and "embedding" in on and _has_linear(loaded):  # features are not stored
        features = mine(
            loaded, bundle.probe, k=1, batch_size=a.batch_size, device=str(device), features=True
        ).features
    mined = Mined(
        layers={n: LayerTopK(**{f: arrays[f"{n}/{f}"] for f in fields}) for n in manifest.layers},
        labels=np.asarray(probe_labels(bundle), dtype=np.int64),
        top5=arrays["predictions/top5"],
        top5_prob=arrays["predictions/top5_prob"],
        features=features,
        activations=stored_activations(store.checkpoint_dir(net_name, ck.name)),
    )
    image_cache = _ImageCache(bundle)
    ctx = Context(
        loaded=loaded,
        network=net_name,
        image=image_cache.tensor,
        picture=image_cache.uint8,
        class_names=bundle.class_names,
        labels=mined.labels,
        shown={lay: list(u) for lay, u in manifest.shown_units.items()},
        weighted={lay: classes[f"{lay}/weighted"] for lay in manifest.layers},
        device=device,
        seed=spec.seed,
        problem=spec.problem,
        progress=lambda what, d, n: report(f"{what} {label}", d, n),
    )
    timings = {k: v for k, v in manifest.timings.items() if k not in registry.REGISTRY}
    images: set[int] = set()
    done, keys = _run_analyses(
        spec, store, ck.name, ctx, mined, manifest.key, timings, images, current=manifest
    )
    _write_images(store, bundle, images)
    updated = manifest.model_copy(
        update={
            "techniques": done,
            "analysis_keys": keys,
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
    )
    store.write_manifest(updated)
    return updated


def _keep_activations(ck_dir: Path, mined: Mined, label: str) -> None:
    """Move ``partial/activations.npy`` into the entry, beside ``activations.json`` (offsets)."""
    (ck_dir / ACTIVATIONS_JSON).unlink(missing_ok=True)
    if mined.activations is None:
        (ck_dir / ACTIVATIONS).unlink(missing_ok=True)
        return
    dest = ck_dir / ACTIVATIONS
    if mined.activations.path != dest:
        dest.unlink(missing_ok=True)  # a site may hard-link the old file: never write through it
        mined.activations.path.replace(dest)
    n = len(mined.labels)
    shape = [n, mined.activations.columns]
    doc = {"format": 1, **mined.activations.to_json(), "dtype": "float16", "shape": shape}
    codecs.write_json(ck_dir / ACTIVATIONS_JSON, doc)
    log.info(
        "%s: per-image activations %s: %d images x %d units, %.1f MB",
        label,
        ACTIVATIONS,
        n,
        mined.activations.columns,
        dest.stat().st_size / 1e6,
    )


#: Units whose patches and reconstruction tiles are held at once on crop layers: bounds RAM (VGG-19
#: conv5_4: 512 units x 9 tiles x 96 px x 3 x 2 panels = 255 MB at once otherwise).
SPRITE_CHUNK = 64


def _layer_sprites(
    store: Store,
    network: str,
    checkpoint: str,
    info: Any,
    topk: LayerTopK,
    units: list[int],
    *,
    loaded: LoadedModel,
    image_cache: _ImageCache,
    image_size: int,
    methods: list[str],
    names: list[str],
    top_k: int,
    batch_size: int,
    device: torch.device,
    grayscale: bool,
    pairs: Callable[[int, int], None],
    units_done: Callable[[int, int], None],
) -> tuple[SpriteLayout | None, float, float]:
    """Write one layer's unit sprites: patches, then one panel per reconstruction method.

    Crop layers go :data:`SPRITE_CHUNK` units at a time (their pairs share little work across units);
    whole-image layers (fc, prob) in one call, so that every probe image is forwarded once for all the
    units that rank it (their tiles go to a file past 128 MB: see ``reconstruct_topk``).

    Returns:
        The sprite layout (None: no panels, e.g. fc layers without reconstructions), and the seconds
        spent on patches and on reconstructions.
    """
    whole = info.kind in ("linear", "prob")
    chunk = max(1, len(units)) if whole else SPRITE_CHUNK
    cols = math.ceil(math.sqrt(top_k))
    layout: SpriteLayout | None = None
    t_patch = t_recon = 0.0
    done_pairs = 0
    scratch: list[torch.Tensor] = []  # the image buffer, reused by the layer's chunks
    for c0 in range(0, len(units), chunk):
        part = units[c0 : c0 + chunk]
        t = time.perf_counter()
        panels: list[Any] = []  # arrays or TileFiles
        if not whole:
            panels.append(extract_patches(image_cache.uint8, info, topk, image_size, units=part).cells)
        t_patch += time.perf_counter() - t
        t = time.perf_counter()
        for method in methods:
            panels.append(
                reconstruct_topk(
                    loaded,
                    image_cache.tensor,
                    info,
                    topk,
                    part,
                    method=method,
                    batch_size=batch_size,
                    device=device,
                    image_size=image_size,
                    grayscale=grayscale,
                    progress=functools.partial(_shifted, pairs, done_pairs),
                    pixels=image_cache.pixels,
                    scratch=scratch,
                )
            )
            done_pairs += int((topk.images[part] >= 0).sum())
        t_recon += time.perf_counter() - t
        if not panels:  # fc/prob layers without reconstructions: their pages show the probe images
            continue
        layout = SpriteLayout(cell=panels[0].shape[2], cols=cols, rows=math.ceil(top_k / cols), panels=names)
        for j, u in enumerate(part):
            store.write_sprite(network, checkpoint, info.name, u, sprite([p[j] for p in panels], cols))
            if j % 16 == 15 or j == len(part) - 1:
                units_done(c0 + j + 1, 0)
    return layout, t_patch, t_recon


def _shifted(progress: Callable[[int, int], None], base: int, done: int, total: int) -> None:
    """A chunk's ``progress(done, total)`` as the layer's, ``base`` pairs further on."""
    progress(base + done, total)


def _advance(report: Progress, label: str, base: int, total: int, done: int, _of: int) -> None:
    """A layer's ``progress(done, of)`` as the checkpoint-wide bar ``report(label, base + done, total)``."""
    report(label, base + done, total)


class _Resume:
    """What a killed build of one checkpoint entry already finished, so a rerun resumes there.

    The mined tables are kept after the single pass, and each layer's sprites are vouched for by a
    marker written once all of them are (``partial/<layer>.json``), all under the entry's cache key.
    A rerun with the same key reloads the mined tables instead of mining again (mining is
    deterministic: same images, same model, same batches) and skips finished layers; a different key
    ignores and replaces them. The folder goes when the manifest is written (issue 13, item 7).
    """

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.key = key
        self.done_layers = 0

    def _fresh(self, path: Path) -> dict | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and doc.get("key") == self.key else None

    def mined(self, *, activations: bool = False) -> Mined | None:
        """The mined tables a killed build of this entry saved, or None (also when ``activations``
        are wanted and the saved pass wrote none)."""
        doc = self._fresh(self.root / "mined.json")
        if doc is None:
            return None
        acts = None
        if activations:
            try:
                acts = Activations.from_json(self.root, doc["activations"])
                ok = np.load(acts.path, mmap_mode="r").shape[1] == acts.columns
            except (OSError, ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                return None
        try:
            arrays = codecs.read_npz(self.root / "mined.npz")
        except (OSError, ValueError):
            return None
        self.done_layers = len(list(self.root.glob("layer-*.json")))
        names = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in arrays if k.startswith("layer:")))
        fields = ("values", "images", "rows", "cols")
        layers = {n[len("layer:") :]: LayerTopK(**{f: arrays[f"{n}/{f}"] for f in fields}) for n in names}
        return Mined(
            layers=layers,
            labels=arrays["labels"],
            top5=arrays["top5"],
            top5_prob=arrays["top5_prob"],
            features=arrays.get("features"),
            activations=acts,
        )

    def save_mined(self, mined: Mined) -> None:
        arrays = {"labels": mined.labels, "top5": mined.top5, "top5_prob": mined.top5_prob}
        if mined.features is not None:
            arrays["features"] = mined.features
        for name, topk in mined.layers.items():
            for f in ("values", "images", "rows", "cols"):
                arrays[f"layer:{name}/{f}"] = getattr(topk, f)
        codecs.write_npz(self.root / "mined.npz", arrays)
        doc: dict = {"key": self.key}
        if mined.activations is not None:
            doc["activations"] = mined.activations.to_json()
        codecs.write_json(self.root / "mined.json", doc)

    def layer(self, name: str, units: list[int]) -> tuple[bool, SpriteLayout | None]:
        """Whether a layer's sprites are all written, and their layout (None: the layer has none)."""
        doc = self._fresh(self.root / f"layer-{_safe(name)}.json")
        if doc is None or doc.get("units") != units:
            return False, None
        return True, None if doc["layout"] is None else SpriteLayout(**doc["layout"])

    def finish_layer(self, name: str, units: list[int], layout: SpriteLayout | None) -> None:
        doc = {"key": self.key, "units": units, "layout": layout and layout.model_dump(mode="json")}
        codecs.write_json(self.root / f"layer-{_safe(name)}.json", doc)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class _ImageCache:
    """Probe images by index, as uint8 arrays (patches) and [0,1] tensors (reconstructions)."""

    def __init__(self, bundle: DataBundle) -> None:
        self.bundle = bundle

    def uint8(self, index: int) -> np.ndarray:
        return probe_image(self.bundle, index)

    def tensor(self, index: int) -> torch.Tensor:
        return self.bundle.probe[index][0]

    def pixels(self, index: int) -> torch.Tensor:
        """uint8 ``[3, H, W]``: :meth:`tensor` is ``pixels(i).float() / 255`` (reconstructions load these)."""
        return self.bundle.probe.uint8(index)


def _shown_units(net: NetworkSpec, info, seed: int, *, sample: int | None = None) -> list[int]:
    """Units with pages: all, a deterministic sample (seeded by layer name), or a list (clipped).

    ``sample``: then only that many of them, evenly spaced, as the feature-evolution pages pick
    them (:data:`sitegen.store.manifest.EVOLUTION_UNITS`).
    """
    choice = net.units.get(info.name, "all") if isinstance(net.units, dict) else net.units
    if choice == "all":
        units = list(range(info.units))
    elif isinstance(choice, int):
        if choice >= info.units:
            units = list(range(info.units))
        else:
            rng = np.random.default_rng([seed, zlib.crc32(info.name.encode())])
            units = sorted(int(u) for u in rng.choice(info.units, size=choice, replace=False))
    else:
        units = sorted({u for u in choice if u < info.units})
    return evenly_spaced(units, sample) if sample is not None else units


def _check_units(spec: Spec, net_name: str, net: NetworkSpec, layers: tuple) -> None:
    """A units mapping must name layers of the network, and its indices exist (:func:`unit_problems`)."""
    problems = unit_problems(spec, net_name, net, layers)
    if problems:
        raise SpecError(problems)


def _has_linear(loaded: LoadedModel) -> bool:
    return any(isinstance(m, torch.nn.Linear) for m in loaded.module.modules())


def _write_actmaps(store: Store, ck_dir: Path, maps) -> None:
    doc: dict[str, Any] = {"format": 1, "images": []}
    for item in maps.images:
        layers = []
        for lay in item.layers:
            chans = []
            for ch in lay.channels:
                name = f"actmaps/{item.index}-{lay.layer}-{ch.channel}.png"
                store.write_png(ck_dir / name, ch.overlay)
                chans.append({"channel": ch.channel, "norm": ch.norm, "png": name})
            layers.append({"layer": lay.layer, "channels": chans})
        doc["images"].append(
            {
                "index": item.index,
                "label": item.label,
                "top5": [[c, p] for c, p in item.top5],
                "layers": layers,
            }
        )
    store.write_json(ck_dir / "actmaps.json", doc)


def _write_redirect(output: Path) -> None:
    """``output/index.html`` → ``site/index.html``, so "open output/index.html" works too."""
    (output / "index.html").write_text(
        '<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0; url=site/index.html">'
        '<title>sitegen atlas</title><a href="site/index.html">Open the atlas</a>\n',
        encoding="utf-8",
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


__all__ = ["build", "BuildResult", "resolve_device", "layer_table_for"]
