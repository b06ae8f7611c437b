"""The diff stage: two checkpoint entries → :class:`~sitegen.diff.types.StoreDiff` (the measures of
:mod:`sitegen.diff`, units matched by index or by correlation, CKA between layers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sitegen.analyses.similarity import assignment, correlation_matrix
from sitegen.compare import cka_between
from sitegen.diff._load import _array, _check_comparable, _classes, _cosine, _load, _Loaded
from sitegen.diff.measures import preference_distances, rank_biased_overlap, top_bottom, topk_overlap
from sitegen.diff.types import DiffSide, LayerDiff, StoreDiff
from sitegen.store.manifest import created_now


def diff_stores(a: DiffSide, b: DiffSide) -> StoreDiff:
    """Compare two checkpoint entries probed on the same data (:mod:`sitegen.diff`: the measures).

    Args:
        a: the older side, e.g. ``DiffSide(Path("output/store"), "alexnet", "epoch-1")``.
        b: the newer side; may live in another store.

    Returns:
        Per layer and unit: top-k overlap, rank-biased overlap, purity and dominant class on both
        sides, filter cosine (when both stored ``weights.npz``); per layer: L1 and JS distance of the
        class preferences, top/bottom classes; per network: both accuracies.

    Raises:
        DiffError: the probe sets (dataset fingerprints), layer tables or top-k differ, or a side
            names a network or checkpoint the store has no entry for.
        StoreError: a store file is missing or malformed.

    Example:
        >>> d = diff_stores(DiffSide(root, "alexnet", "epoch-1"), DiffSide(root, "alexnet", "epoch-4"))
        >>> [round(lay.mean_overlap, 1) for lay in d.layers]
    """
    la, lb = _load(a), _load(b)
    _check_comparable(la, lb)
    k, n_cls = la.manifest.top_k, len(la.class_names)
    acts = la.acts is not None and lb.acts is not None and la.acts.images == lb.acts.images
    hungarian = acts and not same_run(a, b)
    layers = []
    for name, units in la.layers:
        img_a = _array(la.mined, f"{name}/images", a, "mined.npz", (units, k))
        img_b = _array(lb.mined, f"{name}/images", b, "mined.npz", (units, k))
        wa, wb = _classes(la, name, "weighted", (n_cls,)), _classes(lb, name, "weighted", (n_cls,))
        match, match_r, identity = _matching(la, lb, name, hungarian) if acts else (None, None, None)
        pick = match if hungarian else None  # B's unit compared with each of A's
        if pick is not None:
            img_b = img_b[pick]
        l1, js = preference_distances(wa, wb)
        top_a, bottom_a = top_bottom(wa)
        top_b, bottom_b = top_bottom(wb)
        layers.append(
            LayerDiff(
                name=name,
                overlap=topk_overlap(img_a, img_b),
                rbo=rank_biased_overlap(img_a, img_b),
                purity_a=_classes(la, name, "purity", (units,)).astype(np.float32),
                purity_b=_picked(_classes(lb, name, "purity", (units,)), pick).astype(np.float32),
                dominant_a=_classes(la, name, "dominant", (units,)).astype(np.int64),
                dominant_b=_picked(_classes(lb, name, "dominant", (units,)), pick).astype(np.int64),
                cosine=None if hungarian else _cosine(la, lb, name, units),
                weighted_a=np.asarray(wa, np.float64),
                weighted_b=np.asarray(wb, np.float64),
                l1=l1,
                js=js,
                top_a=top_a,
                top_b=top_b,
                bottom_a=bottom_a,
                bottom_b=bottom_b,
                match=pick,
                match_r=match_r,
                identity=identity,
            )
        )
    names = [name for name, _ in la.layers]
    return StoreDiff(
        a=a,
        b=b,
        dataset=la.net.dataset,
        fingerprint=la.fingerprint,
        class_names=la.class_names,
        top_k=k,
        accuracy_a=float(la.manifest.accuracy),
        accuracy_b=float(lb.manifest.accuracy),
        layers=tuple(layers),
        created=created_now(),
        matching="hungarian" if hungarian else "index",
        cka=cka_between(la.acts, names, lb.acts, names) if acts else None,
        images=la.acts.images if acts and la.acts is not None else 0,
    )


def same_run(a: DiffSide, b: DiffSide) -> bool:
    """Checkpoints of one training run (same network in the same store): unit indices correspond."""
    return a.network == b.network and Path(a.store_root).resolve() == Path(b.store_root).resolve()


def _picked(values: np.ndarray, pick: np.ndarray | None) -> np.ndarray:
    return values if pick is None else values[pick]


def _matching(
    la: _Loaded, lb: _Loaded, layer: str, hungarian: bool
) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Hungarian match of a layer's units by correlation (:mod:`sitegen.diff`): ``(match, r, identity)``.

    With ``hungarian`` the compared pairs are the matched ones and ``identity`` is None; otherwise (one
    run) the pairs are (u, u), their r is returned, and ``identity`` is the share of units matched to
    themselves.
    """
    assert la.acts is not None and lb.acts is not None
    r, ca, cb = correlation_matrix(la.acts.layer(layer), lb.acts.layer(layer))
    match, match_r, _ = assignment(r, ca, cb)
    if hungarian:
        return match, match_r, None
    u = np.arange(len(match))
    diag = np.where(~ca & ~cb, r[u, u].astype(np.float64), np.nan)
    return match, diag, float((match == u).mean()) if len(u) else None
