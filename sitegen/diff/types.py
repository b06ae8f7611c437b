"""Hand-off types of the diff stage: a side (:class:`DiffSide`), what changed per layer
(:class:`LayerDiff`) and per checkpoint pair (:class:`StoreDiff`), and what ``sitegen diff`` did
(:class:`DiffResult`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


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
