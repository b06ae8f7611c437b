"""Diff: two checkpoint entries of an artifact store (or of two stores) → :class:`StoreDiff` → store.

Pure numpy over stored artifacts (``mined.npz``, ``classes.npz``, the optional ``weights.npz``, the
JSON records); it never imports torch. Render reads what :func:`write_diff` wrote to draw the diff
pages, and reuses :func:`topk_overlap` for the feature-evolution pages (issue 6).

Definitions (also in docs/INTERNALS.md, "Diffs"), per layer and unit, ``k`` = the stores' top-k:

- **overlap**: how many of A's top-k images are also among B's top-k (0..k; padding ``-1`` ignored).
- **RBO** (rank-biased overlap, Webber, Moffat & Zobel 2010, "A similarity measure for indefinite
  rankings", eq. 32 for two lists of one depth ``k``) with persistence ``p`` = :data:`RBO_P` (0.9):
  ``RBO = (X_k / k) p^k + (1 - p) / p * Σ_{d=1..k} (X_d / d) p^d``, where ``X_d`` is how many images
  the two top-``d`` prefixes share. It is 1 for identical lists, 0 for disjoint ones, and weighs
  agreement at the top most (swapping ranks 1 and 2 costs 1 - p = 0.1; losing rank 9 costs p^8 / 9).
  Unlike a rank correlation over the union it needs no rank for an image that one list lacks (issue
  14: ranking the missing images ``k + 1`` read about -0.6 for nearly every unit).
- **purity / dominant class**: from ``classes.npz`` (``<layer>/purity``, ``<layer>/dominant``).
- **cosine**: cosine similarity of the unit's filter weights (``weights.npz``: ``<layer>`` →
  ``[U, fan_in]``), only where both checkpoints stored them; a zero filter gives NaN.

Per layer: **L1** and **Jensen–Shannon distance** between the class preferences (the rank-weighted
histograms ``<layer>/weighted`` normalized to sum 1; an all-zero histogram counts as uniform). JS
uses base-2 logarithms and is the square root of the divergence, so it lies in [0, 1] (L1 in [0, 2]).
The top/bottom classes are the ``n = min(5, C // 2)`` (at least 1) highest/lowest of the weighted
histogram, ties by class index, as on the layer pages.

Issue 15, item 6, from both sides' per-image activations (``activations.npy``; skipped without them):

- **unit matching**: checkpoints of one training run (same network, same store) compare unit ``u``
  with unit ``u``; two different runs or networks have no index correspondence, so each layer's units
  are matched one-to-one by the Hungarian assignment maximizing the summed Pearson correlation of
  per-image maxima (:func:`sitegen.analyses.similarity.match_units`; Li et al. 2016), and every
  per-unit measure compares A's unit ``u`` with B's unit ``match[u]`` (filter cosine is left out:
  the filters' input channels are matched differently). Either way each layer records the
  correlation of the compared pairs and, for one run, the share of units whose best match is
  themselves (the identity-match rate).
- **linear CKA** (Kornblith et al. 2019) of every layer of A with every layer of B, on the per-image
  maxima (:func:`sitegen.compare.cka_between`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sitegen import __version__
from sitegen.analyses.similarity import assignment, correlation_matrix
from sitegen.compare import cka_between
from sitegen.errors import DiffError, StoreError
from sitegen.store import Store, codecs
from sitegen.store.activations import Activations, stored_activations
from sitegen.store.manifest import FORMAT, CheckpointManifest, DiffRef, NetworkRecord, created_now

__all__ = [
    "DiffSide",
    "LayerDiff",
    "StoreDiff",
    "DiffResult",
    "diff_stores",
    "diff_name",
    "write_diff",
    "file_diff",
    "read_diff",
    "resolve_side",
    "is_folder_ref",
    "add_diff",
    "topk_overlap",
    "rank_biased_overlap",
    "RBO_P",
    "preference_distances",
    "top_bottom",
    "filter_cosine",
    "same_run",
    "DIFF_FORMAT",
]

_CHUNK = 2048  # units per vectorized block: [chunk, k, k] booleans stay small for any k
RBO_P = 0.9  # RBO persistence: the expected depth a reader looks at is 1 / (1 - p) = 10 ranks
_NAME = re.compile(r"[A-Za-z0-9_.@-]+")
#: diff.json format: 2 added unit matching and CKA (issue 15); format 1 diffs are read as index-matched.
DIFF_FORMAT = 2


# --- hand-offs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffSide:
    """One side of a diff: a checkpoint entry ``networks/<network>/<checkpoint>/`` of the store at
    ``store_root``."""

    store_root: Path
    network: str
    checkpoint: str

    @property
    def ref(self) -> str:
        """``NETWORK@CHECKPOINT``."""
        return f"{self.network}@{self.checkpoint}"


@dataclass(frozen=True, slots=True, eq=False)
class LayerDiff:
    """How one layer changed from A to B: per-unit arrays (``[U]``) and per-layer distances.

    ``cosine`` is None where either checkpoint stored no filter weights for the layer.
    ``weighted_a``/``weighted_b`` are the raw ``[C]`` rank-weighted class histograms.
    """

    name: str
    overlap: np.ndarray
    rbo: np.ndarray
    purity_a: np.ndarray
    purity_b: np.ndarray
    dominant_a: np.ndarray
    dominant_b: np.ndarray
    cosine: np.ndarray | None
    weighted_a: np.ndarray
    weighted_b: np.ndarray
    l1: float
    js: float
    top_a: tuple[int, ...]
    top_b: tuple[int, ...]
    bottom_a: tuple[int, ...]
    bottom_b: tuple[int, ...]
    match: np.ndarray | None = None  # int64 [U]: B's unit compared with A's unit u (None: u itself)
    match_r: np.ndarray | None = None  # float64 [U]: Pearson r of the compared pair (NaN: undefined)
    identity: float | None = None  # one run: share of units whose Hungarian match is themselves

    def b_unit(self, u: int) -> int:
        """B's unit compared with A's unit ``u``."""
        return int(self.match[u]) if self.match is not None else u

    @property
    def mean_match_r(self) -> float | None:
        if self.match_r is None or not np.isfinite(self.match_r).any():
            return None
        return float(np.nanmean(self.match_r))

    @property
    def units(self) -> int:
        return len(self.overlap)

    @property
    def mean_overlap(self) -> float:
        return float(self.overlap.mean()) if self.units else 0.0

    @property
    def mean_rbo(self) -> float:
        return float(self.rbo.mean()) if self.units else 0.0

    @property
    def mean_purity_change(self) -> float:
        return float((self.purity_b - self.purity_a).mean()) if self.units else 0.0

    @property
    def dominant_changed(self) -> float:
        """Share of units whose dominant class changed (0..1)."""
        return float((self.dominant_a != self.dominant_b).mean()) if self.units else 0.0

    @property
    def mean_cosine(self) -> float | None:
        if self.cosine is None or not np.isfinite(self.cosine).any():
            return None
        return float(np.nanmean(self.cosine))

    @property
    def entered_top(self) -> tuple[int, ...]:
        return tuple(c for c in self.top_b if c not in self.top_a)

    @property
    def left_top(self) -> tuple[int, ...]:
        return tuple(c for c in self.top_a if c not in self.top_b)

    @property
    def entered_bottom(self) -> tuple[int, ...]:
        return tuple(c for c in self.bottom_b if c not in self.bottom_a)

    @property
    def left_bottom(self) -> tuple[int, ...]:
        return tuple(c for c in self.bottom_a if c not in self.bottom_b)


@dataclass(frozen=True, slots=True, eq=False)
class StoreDiff:
    """Everything that changed between two checkpoint entries probed on the same data."""

    a: DiffSide
    b: DiffSide
    dataset: str
    fingerprint: str
    class_names: tuple[str, ...]
    top_k: int
    accuracy_a: float
    accuracy_b: float
    layers: tuple[LayerDiff, ...]
    created: str = ""
    matching: str = "index"  # "index" (one run) | "hungarian" (units matched by correlation)
    cka: np.ndarray | None = None  # float64 [layers, layers]: A's layers (rows) x B's (NaN: undefined)
    images: int = 0  # probe images the activation measures ran over (0: none)

    @property
    def accuracy_change(self) -> float:
        return self.accuracy_b - self.accuracy_a

    @property
    def has_weights(self) -> bool:
        """True when some layer has a cosine column (both checkpoints stored weights.npz)."""
        return any(lay.cosine is not None for lay in self.layers)

    @property
    def mean_overlap(self) -> float:
        """Mean overlap over all units of all layers."""
        n = sum(lay.units for lay in self.layers)
        return sum(float(lay.overlap.sum()) for lay in self.layers) / n if n else 0.0

    def layer(self, name: str) -> LayerDiff:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)


@dataclass(frozen=True, slots=True, eq=False)
class DiffResult:
    """What :func:`add_diff` did: the store that holds the diff, its name, the diff, and the site
    folder to re-render (``<store>/../site``)."""

    store_root: Path
    name: str
    diff: StoreDiff

    @property
    def site_dir(self) -> Path:
        return self.store_root.parent / "site"

    @property
    def summary(self) -> str:
        d = self.diff
        return (
            f"{d.a.ref} → {d.b.ref}: mean top-{d.top_k} overlap {d.mean_overlap:.2f}, "
            f"accuracy {d.accuracy_change * 100:+.1f} pp"
        )


# --- per-unit and per-layer measures ----------------------------------------------------------------


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two [units, k] arrays of one shape, got {a.shape} and {b.shape}")
    return a, b


def topk_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per unit, how many of ``a``'s top-k images are also in ``b``'s top-k.

    Args:
        a: int ``[U, k]`` probe image indices (``-1`` = empty slot), e.g. ``mined.npz`` ``<layer>/images``.
        b: the same for the other checkpoint.

    Returns:
        int64 ``[U]`` in ``0..k``.

    Example:
        >>> topk_overlap(np.array([[3, 1, 2]]), np.array([[2, 5, 3]]))
        array([2])
    """
    a, b = _pair(a, b)
    out = np.zeros(len(a), np.int64)
    for s in range(0, len(a), _CHUNK):
        ca, cb = a[s : s + _CHUNK], b[s : s + _CHUNK]
        hit = (ca[:, :, None] == cb[:, None, :]).any(2) & (ca >= 0)
        out[s : s + _CHUNK] = hit.sum(1)
    return out


def rank_biased_overlap(a: np.ndarray, b: np.ndarray, p: float = RBO_P) -> np.ndarray:
    """Per unit, the rank-biased overlap of two top-k lists (module docstring; Webber et al. 2010).

    Args:
        a: int ``[U, k]`` top-k image indices in rank order (``-1`` = empty slot, never shared).
        b: the same for the other checkpoint.
        p: persistence in (0, 1): how steeply agreement further down counts less.

    Returns:
        float64 ``[U]`` in [0, 1]: 1 for identical lists, 0 for disjoint ones.

    Example:
        >>> rank_biased_overlap(np.array([[1, 2, 3]]), np.array([[2, 1, 3]]))  # X = (0, 2, 3)
        array([0.9])
    """
    if not 0 < p < 1:
        raise ValueError(f"RBO persistence p must lie in (0, 1), got {p}")
    a, b = _pair(a, b)
    k = a.shape[1]
    depth = np.arange(1, k + 1, dtype=np.float64)
    w = (1 - p) / p * p**depth / depth  # weight of X_d
    w[-1] += p**k / k  # the extrapolation term (X_k / k) p^k
    # a shared image at rank i of a and j of b is in both prefixes from depth max(i, j) + 1 on
    first = np.maximum(np.arange(k)[:, None], np.arange(k)[None, :])
    out = np.zeros(len(a), np.float64)
    for s in range(0, len(a), _CHUNK):
        ca, cb = a[s : s + _CHUNK], b[s : s + _CHUNK]
        eq = (ca[:, :, None] == cb[:, None, :]) & (ca >= 0)[:, :, None]
        new = np.stack([(eq & (first == d)).sum((1, 2)) for d in range(k)], 1)  # [U, k]
        out[s : s + _CHUNK] = np.cumsum(new, 1) @ w
    return np.clip(out, 0.0, 1.0)


def _normalize(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, np.float64)
    total = float(w.sum())
    return w / total if total > 0 else np.full(len(w), 1.0 / max(len(w), 1))


def preference_distances(weighted_a: np.ndarray, weighted_b: np.ndarray) -> tuple[float, float]:
    """L1 and Jensen–Shannon distance (base 2, square root of the divergence) of two class preferences.

    Args:
        weighted_a: ``[C]`` rank-weighted class histogram; normalized to sum 1 here.
        weighted_b: the same for the other checkpoint.

    Returns:
        ``(l1, js)``: l1 in [0, 2], js in [0, 1]; both 0 for equal preferences.

    Example:
        >>> preference_distances(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
        (2.0, 1.0)
    """
    p, q = _normalize(weighted_a), _normalize(weighted_b)
    if p.shape != q.shape:
        raise ValueError(f"class histograms of different length: {p.shape} vs {q.shape}")
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float((x[nz] * np.log2(x[nz] / m[nz])).sum())

    return float(np.abs(p - q).sum()), math.sqrt(max(0.0, 0.5 * kl(p) + 0.5 * kl(q)))


def top_bottom(weighted: np.ndarray, n: int | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The ``n`` most and least preferred classes of a weighted histogram (ties: lower index first
    among the most preferred; the bottom list starts with the least preferred).

    Args:
        weighted: ``[C]`` rank-weighted class histogram.
        n: how many; default ``min(5, C // 2)``, at least 1 (the layer pages' top/bottom-5).
    """
    w = np.asarray(weighted)
    if n is None:
        n = max(1, min(5, len(w) // 2))
    order = np.argsort(-w, kind="stable").tolist()
    return tuple(order[:n]), tuple(reversed(order[-n:]))


def filter_cosine(weights_a: np.ndarray, weights_b: np.ndarray) -> np.ndarray:
    """Per unit, the cosine similarity of its filter in A and in B.

    Args:
        weights_a: ``[U, fan_in]`` (any float dtype), a unit's weights flattened per row.
        weights_b: the same for the other checkpoint.

    Returns:
        float64 ``[U]`` in [-1, 1]; NaN where either filter is all zeros.
    """
    wa = np.asarray(weights_a, np.float64).reshape(len(weights_a), -1)
    wb = np.asarray(weights_b, np.float64).reshape(len(weights_b), -1)
    if wa.shape != wb.shape:
        raise ValueError(f"filter weights of different shape: {wa.shape} vs {wb.shape}")
    norm = np.linalg.norm(wa, axis=1) * np.linalg.norm(wb, axis=1)
    dot = (wa * wb).sum(1)
    out = np.full(len(wa), np.nan)
    ok = norm > 0
    out[ok] = np.clip(dot[ok] / norm[ok], -1.0, 1.0)
    return out


# --- reading a side ---------------------------------------------------------------------------------


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


# --- the stage --------------------------------------------------------------------------------------


def diff_stores(a: DiffSide, b: DiffSide) -> StoreDiff:
    """Compare two checkpoint entries probed on the same data (module docstring: the measures).

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
    """Hungarian match of a layer's units by correlation (module docstring): ``(match, r, identity)``.

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


def diff_name(a: DiffSide, b: DiffSide) -> str:
    """The folder name of a diff: ``<net>@<ckA>--<net>@<ckB>``, each name slugged.

    Slugging keeps ``[A-Za-z0-9_.-]`` and turns any other run of characters into ``-`` (as
    :func:`sitegen.render.views.slug` does), so ``@`` and ``--`` only ever come from this scheme.

    Example:
        >>> diff_name(DiffSide(p, "alexnet", "epoch 1"), DiffSide(p, "alexnet", "epoch-4"))
        'alexnet@epoch-1--alexnet@epoch-4'
    """

    def s(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "x"

    return f"{s(a.network)}@{s(a.checkpoint)}--{s(b.network)}@{s(b.checkpoint)}"


def _diff_dir(store: Store, name: str) -> Path:
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise DiffError(f"diff name {name!r}: use letters, digits and _ . @ - only (see diff_name)")
    return store.root / "diffs" / name


def _side_json(store: Store, side: DiffSide) -> dict:
    root = Path(side.store_root).resolve()
    here = store.root.resolve()
    rel = "." if root == here else os.path.relpath(root, here)
    return {"ref": side.ref, "network": side.network, "checkpoint": side.checkpoint, "store": rel}


def write_diff(store: Store, name: str, diff: StoreDiff) -> None:
    """Write ``store/diffs/<name>/diff.npz`` (per-unit arrays) then ``diff.json`` (format 1:
    metadata and per-layer summaries), each atomically; ``diff.json`` last marks the diff complete.

    Sides living in other stores are recorded by their path relative to ``store`` (docs/INTERNALS.md).

    Args:
        store: the store that holds the diff (the build's store, or the newer side's).
        name: the folder name, normally :func:`diff_name`.
        diff: from :func:`diff_stores`.
    """
    folder = _diff_dir(store, name)
    arrays: dict[str, np.ndarray] = {}
    for lay in diff.layers:
        arrays |= {
            f"{lay.name}/overlap": lay.overlap.astype(np.int64),
            f"{lay.name}/rbo": lay.rbo.astype(np.float64),
            f"{lay.name}/purity_a": lay.purity_a,
            f"{lay.name}/purity_b": lay.purity_b,
            f"{lay.name}/dominant_a": lay.dominant_a,
            f"{lay.name}/dominant_b": lay.dominant_b,
            f"{lay.name}/weighted_a": lay.weighted_a,
            f"{lay.name}/weighted_b": lay.weighted_b,
        }
        if lay.cosine is not None:
            arrays[f"{lay.name}/cosine"] = lay.cosine.astype(np.float64)
        if lay.match is not None:
            arrays[f"{lay.name}/match"] = lay.match.astype(np.int64)
        if lay.match_r is not None:
            arrays[f"{lay.name}/match_r"] = lay.match_r.astype(np.float64)
    if diff.cka is not None:
        arrays["cka"] = diff.cka.astype(np.float64)
    codecs.write_npz(folder / "diff.npz", arrays)
    doc = {
        "format": DIFF_FORMAT,
        "name": name,
        "created": diff.created,
        "sitegen_version": __version__,
        "a": _side_json(store, diff.a),
        "b": _side_json(store, diff.b),
        "dataset": diff.dataset,
        "fingerprint": diff.fingerprint,
        "class_names": list(diff.class_names),
        "top_k": diff.top_k,
        "accuracy": {"a": diff.accuracy_a, "b": diff.accuracy_b, "change": diff.accuracy_change},
        "weights": diff.has_weights,
        "matching": diff.matching,
        "cka": diff.cka is not None,
        "images": diff.images,
        "layers": [
            {
                "name": lay.name,
                "units": lay.units,
                "mean_overlap": lay.mean_overlap,
                "mean_rbo": lay.mean_rbo,
                "rbo_p": RBO_P,
                "l1": lay.l1,
                "js": lay.js,
                "mean_purity_change": lay.mean_purity_change,
                "dominant_changed": lay.dominant_changed,
                "mean_cosine": lay.mean_cosine,
                "mean_match_r": lay.mean_match_r,
                "identity": lay.identity,
                "top": {"a": lay.top_a, "b": lay.top_b, "entered": lay.entered_top, "left": lay.left_top},
                "bottom": {
                    "a": lay.bottom_a,
                    "b": lay.bottom_b,
                    "entered": lay.entered_bottom,
                    "left": lay.left_bottom,
                },
            }
            for lay in diff.layers
        ],
    }
    codecs.write_json(folder / "diff.json", doc)


def file_diff(store: Store, a: DiffSide, b: DiffSide) -> tuple[DiffRef, StoreDiff]:
    """Diff ``a`` and ``b`` (:func:`diff_stores`) and write it into ``store`` under :func:`diff_name`.

    What a build does for each of its spec's ``diffs:`` and ``sitegen diff A B`` for its pair.

    Returns:
        The :class:`DiffRef` that lists it in a ``build.json``, and the diff.
    """
    diff = diff_stores(a, b)
    name = diff_name(a, b)
    write_diff(store, name, diff)
    return DiffRef(a=a.ref, b=b.ref, name=name), diff


def read_diff(store: Store, name: str) -> StoreDiff:
    """Read what :func:`write_diff` wrote; side store paths come back resolved against ``store``.

    Raises:
        StoreError: the diff is missing, unreadable, of another format, or lacks an array.
    """
    folder = _diff_dir(store, name)
    path = folder / "diff.json"
    hint = "rerun `sitegen build` (or `sitegen diff`)"
    if not path.is_file():
        raise StoreError(f"{path}: missing; the store is incomplete, {hint}")
    try:
        doc = codecs.read_json(path)
        arrays = codecs.read_npz(folder / "diff.npz")
    except FileNotFoundError:
        raise StoreError(f"{folder / 'diff.npz'}: missing; the store is incomplete, {hint}") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{folder}: unreadable diff ({e}); {hint}") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt not in (FORMAT, DIFF_FORMAT):  # format 1: index-matched, no CKA (the keys below are absent)
        reads = f"this sitegen reads formats 1 and {DIFF_FORMAT}"
        raise StoreError(f"{path}: diff format {fmt!r}, {reads}; {hint}")

    def side(d: dict) -> DiffSide:
        rel = str(d["store"])
        root = store.root if rel == "." else Path(os.path.normpath(store.root / rel))
        return DiffSide(root, str(d["network"]), str(d["checkpoint"]))

    try:
        layers = []
        for lay in doc["layers"]:
            n = lay["name"]
            layers.append(
                LayerDiff(
                    name=n,
                    overlap=arrays[f"{n}/overlap"],
                    rbo=arrays[f"{n}/rbo"],
                    purity_a=arrays[f"{n}/purity_a"],
                    purity_b=arrays[f"{n}/purity_b"],
                    dominant_a=arrays[f"{n}/dominant_a"],
                    dominant_b=arrays[f"{n}/dominant_b"],
                    cosine=arrays.get(f"{n}/cosine"),
                    weighted_a=arrays[f"{n}/weighted_a"],
                    weighted_b=arrays[f"{n}/weighted_b"],
                    l1=float(lay["l1"]),
                    js=float(lay["js"]),
                    top_a=tuple(lay["top"]["a"]),
                    top_b=tuple(lay["top"]["b"]),
                    bottom_a=tuple(lay["bottom"]["a"]),
                    bottom_b=tuple(lay["bottom"]["b"]),
                    match=arrays.get(f"{n}/match"),
                    match_r=arrays.get(f"{n}/match_r"),
                    identity=None if lay.get("identity") is None else float(lay["identity"]),
                )
            )
        matching = str(doc.get("matching", "index"))
        if matching not in ("index", "hungarian"):
            raise ValueError(f"matching {matching!r}")
        if matching == "hungarian" and any(lay.match is None for lay in layers):
            raise KeyError("<layer>/match")
        cka = arrays.get("cka") if doc.get("cka") else None
        if doc.get("cka") and (cka is None or cka.shape != (len(layers), len(layers))):
            raise KeyError("cka")
        return StoreDiff(
            a=side(doc["a"]),
            b=side(doc["b"]),
            dataset=str(doc["dataset"]),
            fingerprint=str(doc["fingerprint"]),
            class_names=tuple(doc["class_names"]),
            top_k=int(doc["top_k"]),
            accuracy_a=float(doc["accuracy"]["a"]),
            accuracy_b=float(doc["accuracy"]["b"]),
            layers=tuple(layers),
            created=str(doc.get("created", "")),
            matching=matching,
            cka=cka,
            images=int(doc.get("images", 0)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"{folder}: malformed diff ({type(e).__name__}: {e}); {hint}") from None


# --- the `sitegen diff A B` command -----------------------------------------------------------------


def _store_of(folder: Path) -> Path | None:
    """The store of an atlas output folder (``<dir>/store``) or the store folder itself."""
    for candidate in (folder / "store", folder):
        if (candidate / "build.json").is_file():
            return candidate
    return None


def is_folder_ref(ref: str) -> bool:
    """True for the ``DIR`` and ``DIR:NETWORK@CHECKPOINT`` forms (an existing folder): no spec needed.

    Example:
        >>> is_folder_ref("alexnet@epoch-1"), is_folder_ref("runs/a"), is_folder_ref("runs/a:alexnet@epoch-1")
        (False, True, True)
    """
    return Path(ref).is_dir() or (":" in ref and Path(ref.rpartition(":")[0]).is_dir())


def resolve_side(ref: str, *, store_root: Path | None = None) -> DiffSide:
    """Turn a command-line reference into a :class:`DiffSide`.

    Accepted forms:

    - ``NETWORK@CHECKPOINT`` (or ``NETWORK``: its last checkpoint with a store entry) in ``store_root``
      (the spec's ``output/store``);
    - ``DIR``: an atlas output folder (holding ``store/``) or a store folder, with one network: its
      last checkpoint with a store entry;
    - ``DIR:NETWORK@CHECKPOINT`` (or ``DIR:NETWORK``) for a folder with several networks.

    Raises:
        DiffError: malformed reference, no such folder, network or store entry.
    """
    folder, pick = None, ref
    if Path(ref).is_dir():
        folder, pick = Path(ref), ""
    elif is_folder_ref(ref):
        head, _, pick = ref.rpartition(":")
        folder = Path(head)
    if folder is not None:
        root = _store_of(folder)
        if root is None:
            raise DiffError(f"{folder}: not an atlas output folder (no store/build.json); build it first")
    elif store_root is None:
        raise DiffError(f"{ref!r}: no such folder; NETWORK@CHECKPOINT refs need a spec (its output/store)")
    else:
        root = Path(store_root)
    store = Store(root)
    network, _, checkpoint = pick.partition("@")
    if not network:
        nets = store.read_build().networks
        if len(nets) != 1:
            raise DiffError(f"{folder}: holds networks {nets}; name one as {folder}:NETWORK@CHECKPOINT")
        network = nets[0]
    if not (store.network_dir(network) / "network.json").is_file():
        raise DiffError(f"{ref!r}: no network {network!r} in {root}; it has {_networks_in(store)}")
    if not checkpoint:
        entries = _entries(store, store.read_network(network))
        if not entries:
            raise DiffError(f"{ref!r}: {network} has no checkpoint with a store entry in {root}")
        checkpoint = entries[-1]
    return DiffSide(root, network, checkpoint)


def add_diff(a: str, b: str, *, store_root: Path | None = None) -> DiffResult:
    """What ``sitegen diff A B`` does: diff two references and file the result in B's store.

    Resolves both references (:func:`resolve_side`), computes :func:`diff_stores`, writes it with
    :func:`write_diff` under :func:`diff_name` into the store of side B (the newer one), and lists it
    in that store's ``build.json`` (replacing a diff of the same name). Re-render that store's site
    (``result.site_dir``) afterwards to see the page.

    Args:
        a: older side: ``NETWORK@CHECKPOINT``, ``DIR`` or ``DIR:NETWORK@CHECKPOINT``.
        b: newer side, the same forms.
        store_root: the store ``NETWORK@CHECKPOINT`` refers to (a spec's ``output/store``).

    Raises:
        DiffError: unresolvable reference or incomparable checkpoints.
        StoreError: B's store has no finished build, or a file is missing.
    """
    sa, sb = resolve_side(a, store_root=store_root), resolve_side(b, store_root=store_root)
    store = Store(sb.store_root)
    ref, result = file_diff(store, sa, sb)
    build = store.read_build()
    refs = [r for r in build.diffs if r.name != ref.name] + [ref]
    store.write_build(build.model_copy(update={"diffs": refs}))
    return DiffResult(store_root=sb.store_root, name=ref.name, diff=result)
