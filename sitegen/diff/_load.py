"""Reading one side of a diff from its store (manifest, mined, classes, weights, activations) and
checking that two sides are comparable; errors name the file and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sitegen.diff.measures import filter_cosine
from sitegen.diff.types import DiffSide
from sitegen.errors import DiffError, StoreError
from sitegen.store import Store, codecs
from sitegen.store.activations import Activations, stored_activations
from sitegen.store.manifest import CheckpointManifest, NetworkRecord


@dataclass(frozen=True)
class _Loaded:
    side: DiffSide
    net: NetworkRecord
    manifest: CheckpointManifest
    fingerprint: str
    class_names: tuple[str, ...]
    mined: dict[str, np.ndarray]
    classes: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] | None
    layers: tuple[tuple[str, int], ...]
    acts: Activations | None


def _networks_in(store: Store) -> list[str]:
    return sorted(p.parent.name for p in (store.root / "networks").glob("*/network.json"))


def _entries(store: Store, net: NetworkRecord) -> list[str]:
    """Checkpoints of ``net`` that have a complete store entry (``manifest.json``), in order."""
    return [
        c.name
        for c in net.checkpoints
        if (store.checkpoint_dir(net.name, c.name) / "manifest.json").is_file()
    ]


def _load(side: DiffSide) -> _Loaded:
    store = Store(side.store_root)
    if not (store.network_dir(side.network) / "network.json").is_file():
        raise DiffError(f"{store.root}: no network {side.network!r}; it has {_networks_in(store)}")
    net = store.read_network(side.network)
    if not (store.checkpoint_dir(side.network, side.checkpoint) / "manifest.json").is_file():
        raise DiffError(
            f"{store.root}: {side.network} has no store entry for checkpoint {side.checkpoint!r}; "
            f"entries: {_entries(store, net)} (list the checkpoint under `diffs:` in the spec and rebuild)"
        )
    m = store.read_manifest(side.network, side.checkpoint)
    ds = store.read_dataset(net.dataset)
    units = {lay.name: lay.units for lay in net.layers}
    missing = [name for name in m.layers if name not in units]
    if missing:
        raise StoreError(
            f"{store.network_dir(side.network)}/network.json: no layer(s) {missing} that "
            f"{side.checkpoint}/manifest.json lists; rerun `sitegen build`"
        )
    weights_path = store.checkpoint_dir(side.network, side.checkpoint) / "weights.npz"
    return _Loaded(
        side=side,
        net=net,
        manifest=m,
        fingerprint=ds.fingerprint,
        class_names=tuple(ds.class_names),
        mined=store.read_arrays(side.network, side.checkpoint, "mined"),
        classes=store.read_arrays(side.network, side.checkpoint, "classes"),
        weights=codecs.read_npz(weights_path) if weights_path.is_file() else None,
        layers=tuple((name, units[name]) for name in m.layers),
        acts=stored_activations(store.checkpoint_dir(side.network, side.checkpoint)),
    )


def _array(arrays: dict[str, np.ndarray], key: str, side: DiffSide, file: str, shape: tuple) -> np.ndarray:
    where = Path(side.store_root) / "networks" / side.network / side.checkpoint / file
    if key not in arrays:
        raise StoreError(f"{where}: no array {key!r}; the store is incomplete, rerun `sitegen build`")
    arr = arrays[key]
    if arr.shape[: len(shape)] != shape:
        raise StoreError(
            f"{where}: {key} has shape {list(arr.shape)}, expected {list(shape)} first; rerun `sitegen build`"
        )
    return arr


def _classes(lo: _Loaded, layer: str, key: str, shape: tuple) -> np.ndarray:
    return _array(lo.classes, f"{layer}/{key}", lo.side, "classes.npz", shape)


def _short(fingerprint: str) -> str:
    return fingerprint[:12] + ("…" if len(fingerprint) > 12 else "")


def _check_comparable(a: _Loaded, b: _Loaded) -> None:
    if a.fingerprint != b.fingerprint:
        raise DiffError(
            f"probe sets differ: fingerprint {_short(a.fingerprint)} ({a.side.ref}) vs "
            f"{_short(b.fingerprint)} ({b.side.ref}); diff checkpoints probed on the same data"
        )
    if a.layers != b.layers:
        la, lb = dict(a.layers), dict(b.layers)
        only_a = [n for n in la if n not in lb]
        only_b = [n for n in lb if n not in la]
        if only_a or only_b:
            what = f"only {a.side.ref} has {only_a}, only {b.side.ref} has {only_b}"
        else:
            diffs = [f"{n} {la[n]} vs {lb[n]} units" for n in la if la[n] != lb[n]]
            what = ", ".join(diffs) if diffs else f"order {list(la)} vs {list(lb)}"
        raise DiffError(f"layer tables differ: {what}; diff checkpoints of the same architecture")
    if a.manifest.top_k != b.manifest.top_k:
        raise DiffError(
            f"top-k differs: {a.manifest.top_k} ({a.side.ref}) vs {b.manifest.top_k} ({b.side.ref}); "
            "mine both with the same analyses.top_k"
        )


def _cosine(a: _Loaded, b: _Loaded, layer: str, units: int) -> np.ndarray | None:
    if a.weights is None or b.weights is None or layer not in a.weights or layer not in b.weights:
        return None
    wa, wb = a.weights[layer], b.weights[layer]
    if len(wa) != units or len(wb) != units or wa.size != wb.size:
        raise DiffError(
            f"filter weights of {layer} differ in shape: {list(wa.shape)} ({a.side.ref}) vs "
            f"{list(wb.shape)} ({b.side.ref}), layer has {units} units; rerun `sitegen build`"
        )
    return filter_cosine(wa, wb)
