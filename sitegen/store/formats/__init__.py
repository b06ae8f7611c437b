"""Typed store documents of the analyses: one pydantic model per kind, one ``FORMAT`` (issue 12).

``networks/<net>/<ckpt>/<kind>.json`` is written from these models by
:meth:`sitegen.store.Store.write_analysis` and read back, validated once, by
:meth:`sitegen.store.Store.read_analysis`; render and the test fixture use the same types, so a
field is named in one place. File paths inside a document are relative to the checkpoint folder
and checked here (no ``..``, not absolute). Torch-free, like the rest of the store.

The package: :mod:`.base` (``FORMAT``, :class:`AnalysisDoc`, :data:`RelPath`), :mod:`.probes` (the
network page's documents over probe images), :mod:`.units` (per-unit documents of layer and unit
pages), :mod:`.similarity` (correlated units, CKA), :mod:`.classes` (class rankings, effects,
strokes). Every document is imported from here: ``from sitegen.store.formats import GradCamDoc``.
"""

from __future__ import annotations

from sitegen.store.formats.base import FORMAT, AnalysisDoc, RelPath
from sitegen.store.formats.classes import AblationLayer as AblationLayer
from sitegen.store.formats.classes import ClassesDoc, ClassesLayer, ClassRanking, EffectDoc, StrokeDoc
from sitegen.store.formats.classes import DirectEffect as DirectEffect
from sitegen.store.formats.probes import (
    EmbeddingDoc,
    GradCamDoc,
    GradCamImage,
    InvarianceDoc,
    InvarianceKind,
    OcclusionDoc,
    OcclusionImage,
    SmoothGradDoc,
    SmoothGradImage,
)
from sitegen.store.formats.similarity import (
    CkaDoc,
    CkaPair,
    SimilarDoc,
    SimilarLayer,
    SimilarPeer,
    SimilarUnit,
)
from sitegen.store.formats.units import (
    DistributionDoc,
    DistributionLayer,
    DistributionUnit,
    ErfDoc,
    ErfUnit,
    FeatVisDoc,
    FeatVisLayer,
    MasksDoc,
    MasksLayer,
)

__all__ = [
    "FORMAT",
    "CkaDoc",
    "CkaPair",
    "SimilarDoc",
    "SimilarLayer",
    "SimilarPeer",
    "SimilarUnit",
    "ClassRanking",
    "ClassesDoc",
    "ClassesLayer",
    "DistributionDoc",
    "DistributionLayer",
    "DistributionUnit",
    "AnalysisDoc",
    "EffectDoc",
    "EmbeddingDoc",
    "ErfDoc",
    "ErfUnit",
    "FeatVisDoc",
    "FeatVisLayer",
    "GradCamDoc",
    "GradCamImage",
    "InvarianceDoc",
    "InvarianceKind",
    "MasksDoc",
    "MasksLayer",
    "OcclusionDoc",
    "OcclusionImage",
    "RelPath",
    "SmoothGradDoc",
    "SmoothGradImage",
    "StrokeDoc",
]
