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

The package, one job per module: :mod:`.types` (the hand-offs), :mod:`.measures` (the pure numpy
measures), :mod:`._load` (reading a side from its store, comparability checks), :mod:`.stage`
(:func:`diff_stores`), :mod:`.files` (the ``diffs/<name>/`` store format: :func:`write_diff`,
:func:`read_diff`), :mod:`.api` (:func:`file_diff` and the ``sitegen diff A B`` command,
:func:`add_diff`); this module re-exports their public names.
"""

from __future__ import annotations

from sitegen.diff.api import add_diff, file_diff, is_folder_ref, resolve_side
from sitegen.diff.files import DIFF_FORMAT, diff_name, read_diff, write_diff
from sitegen.diff.measures import (
    RBO_P,
    filter_cosine,
    preference_distances,
    rank_biased_overlap,
    top_bottom,
    topk_overlap,
)
from sitegen.diff.stage import diff_stores, same_run
from sitegen.diff.types import DiffResult, DiffSide, LayerDiff, StoreDiff

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
