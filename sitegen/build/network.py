"""One network: its checkpoints (trained, listed, named weights or random init), each wanted entry
computed or found cached, then its record (``network.json``).

An entry whose cache key the store holds is not loaded (a no-op rebuild stays seconds), unless its
analyses changed (:mod:`.refresh`); any other is loaded, its units checked, and mined
(:mod:`.analyze`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch

from sitegen._distributed import barrier
from sitegen.build.analyze import _analyze
from sitegen.build.keys import _checkpoint_hash, _entry_key, _stale_analyses
from sitegen.build.names import _atlas_names, _Checkpoint, _diff_names, _evolution_names
from sitegen.build.refresh import _refresh_analyses
from sitegen.build.sprites import Progress
from sitegen.data import DataBundle, resolve_normalization
from sitegen.errors import StoreError
from sitegen.models import LoadedModel, build_model, load_model, weights_meta
from sitegen.spec import NetworkSpec, Spec
from sitegen.store import Store
from sitegen.store.manifest import (
    CheckpointManifest,
    CheckpointRef,
    EpochRecord,
    LayerRecord,
    NetworkRecord,
    Normalization,
)
from sitegen.train import train, train_key

log = logging.getLogger("sitegen")


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
    """Every wanted checkpoint entry of one network, then its record; returns (computed, cached)."""
    meta = weights_meta(net.arch, net.weights) if net.weights else None
    norm_kind, mean, std = resolve_normalization(net.normalization, bundle, meta)
    checkpoints, history = _checkpoints(spec, net_name, net, bundle, device, report, mean, std, lead=lead)

    names = [c.name for c in checkpoints]
    atlas = _atlas_names(spec, net_name, net, names)
    wanted = set(atlas) | _diff_names(spec, net_name, names) | _evolution_names(spec, net_name, net, names)

    load = partial(_load, spec, net, bundle, (norm_kind, mean, std))
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
        layers, params = _table(loaded)
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

    norm = Normalization(kind=norm_kind, mean=mean, std=std)
    _write_record(store, net_name, net, bundle, norm, layers, params, checkpoints, accuracy, atlas, history)
    return computed, cached


def _load(
    spec: Spec, net: NetworkSpec, bundle: DataBundle, normalization: tuple, ck: _Checkpoint
) -> LoadedModel:
    """One checkpoint of the network, loaded for mining (``normalization``: ``(kind, mean, std)``)."""
    norm_kind, mean, std = normalization
    torch.manual_seed(spec.seed)  # "init" checkpoints: the same random weights every build
    return load_model(
        net,
        num_classes=len(bundle.class_names),
        input_size=bundle.image_size,
        checkpoint=ck.source,
        mean=mean,
        std=std,
        normalization=norm_kind,
    )


def _checkpoints(
    spec: Spec,
    net_name: str,
    net: NetworkSpec,
    bundle: DataBundle,
    device: torch.device,
    report: Progress,
    mean: tuple,
    std: tuple,
    *,
    lead: bool,
) -> tuple[list[_Checkpoint], tuple]:
    """The network's checkpoints, trained first when the spec has a ``train`` block (rank 0 trains;
    cached when its key matches), and the training history (empty without training)."""
    if net.train:
        torch.manual_seed(spec.seed)
        module = build_model(net.arch, len(bundle.class_names), input_size=bundle.image_size)
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
        return [
            _Checkpoint(n, str(p), e.epoch) for (n, p), e in zip(result.checkpoints, history, strict=True)
        ], history
    if net.checkpoints:
        return [_Checkpoint(n, str(p)) for n, p in net.checkpoints.items()], ()
    if net.weights:
        return [
            _Checkpoint(Path(net.weights).stem if Path(net.weights).suffix else net.weights, net.weights)
        ], ()
    log.warning(
        "%s: no weights, checkpoints or train block: mapping a randomly initialised network", net_name
    )
    return [_Checkpoint("init", None)], ()


def _write_record(
    store: Store,
    net_name: str,
    net: NetworkSpec,
    bundle: DataBundle,
    normalization: Normalization,
    layers: list[LayerRecord],
    params: int,
    checkpoints: list[_Checkpoint],
    accuracy: dict[str, float],
    atlas: list[str],
    history: tuple,
) -> None:
    """``network.json``: the network, its layer table, every checkpoint (with pages or not), training."""
    store.write_network(
        NetworkRecord(
            name=net_name,
            arch=net.arch,
            dataset=net.dataset,
            weights=net.weights,
            params=params,
            input_size=bundle.image_size,
            normalization=normalization,
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
