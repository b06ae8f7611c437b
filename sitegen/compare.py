"""Network similarity across store entries: linear CKA between layers (issue 15, item 6).

Cross-network measures need every network's entry, so the build computes them after all networks
(:func:`write_compares`), and :mod:`sitegen.diff` for its two sides; render only draws them. Pure
numpy over ``activations.npy`` (never torch). CKA follows Kornblith et al. 2019 with the linear
kernel on each layer's per-image maxima (:mod:`sitegen.analyses.similarity`).

Store: ``store/compare/<dataset>/cka.json`` (:class:`sitegen.store.formats.CkaDoc`): for every pair
of networks of the dataset (their last atlas checkpoints, as the compare page shows them), the CKA of
every layer of one with every layer of the other. A document whose entries' cache keys are unchanged
is kept as it is.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np

from sitegen.analyses.similarity import cka_matrix
from sitegen.errors import StoreError
from sitegen.store import Store, read_analysis
from sitegen.store.activations import Activations, stored_activations
from sitegen.store.formats import CkaDoc, CkaPair

__all__ = ["cka_between", "cka_path", "read_cka", "write_compares"]

log = logging.getLogger("sitegen")


def cka_between(
    a: Activations | None, layers_a: Sequence[str], b: Activations | None, layers_b: Sequence[str]
) -> np.ndarray | None:
    """CKA ``[len(layers_a), len(layers_b)]`` of two entries' layers; None when either has no per-image
    activations (or a layer is missing) or they were probed on different numbers of images."""
    if a is None or b is None or a.images != b.images:
        return None
    if any(n not in a.offsets for n in layers_a) or any(n not in b.offsets for n in layers_b):
        return None
    return cka_matrix([a.layer(n) for n in layers_a], [b.layer(n) for n in layers_b])


def cka_path(store: Store, dataset: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", dataset).strip("-.") or "x"
    return store.root / "compare" / safe / "cka.json"


def read_cka(store: Store, dataset: str) -> CkaDoc | None:
    """The dataset's CKA document; None when none was written (fewer than two networks, no activations).

    Raises:
        StoreError: the file exists but is unreadable, of another format or malformed.
    """
    path = cka_path(store, dataset)
    return read_analysis(path, CkaDoc) if path.is_file() else None


def _values(m: np.ndarray) -> list[list[float | None]]:
    return [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in m]


def write_compares(store: Store, networks: Sequence[str]) -> list[str]:
    """Write ``compare/<dataset>/cka.json`` for every dataset with two or more of ``networks`` that have
    atlas checkpoints (the compare pages' sides); returns the datasets written or kept.

    A dataset's document is kept when it lists the same entries with the same cache keys. A network
    without per-image activations is left out of the pairs; no pair left: no document (render says so).
    """
    by_ds: dict[str, list[tuple[str, str]]] = {}
    for name in networks:
        net = store.read_network(name)
        atlas = [
            c.name
            for c in net.checkpoints
            if c.atlas and (store.checkpoint_dir(name, c.name) / "manifest.json").is_file()
        ]
        if atlas:
            by_ds.setdefault(net.dataset, []).append((name, atlas[-1]))
    done = []
    for ds, sides in by_ds.items():
        path = cka_path(store, ds)
        if len(sides) < 2:
            path.unlink(missing_ok=True)
            continue
        keys = {f"{n}@{c}": store.read_manifest(n, c).key for n, c in sides}
        try:
            old = read_cka(store, ds)
        except StoreError:
            old = None
        if old is not None and old.keys == keys:
            done.append(ds)
            continue
        acts = {f"{n}@{c}": stored_activations(store.checkpoint_dir(n, c)) for n, c in sides}
        layers = {f"{n}@{c}": store.read_manifest(n, c).layers for n, c in sides}
        pairs, images = [], 0
        for ra, rb in combinations(keys, 2):
            m = cka_between(acts[ra], layers[ra], acts[rb], layers[rb])
            if m is None:
                continue
            images = acts[ra].images  # type: ignore[union-attr]
            pairs.append(CkaPair(a=ra, b=rb, layers_a=layers[ra], layers_b=layers[rb], cka=_values(m)))
        if not pairs:
            path.unlink(missing_ok=True)
            log.info("compare %s: no per-image activations, no CKA", ds)
            continue
        doc = CkaDoc(dataset=ds, images=images, keys=keys, pairs=pairs)
        store.write_json(path, doc.model_dump(mode="json"))
        log.info("compare %s: linear CKA of %d network pair(s)", ds, len(pairs))
        done.append(ds)
    return done
