"""The experiment spec: one pydantic tree loaded from YAML.

``load_spec(path)`` parses the YAML once, keeps every node's line so that each
problem is reported as ``experiments.yaml:12: networks.alexnet.arch: ...``, and
reports ALL problems at once (structure, cross references, missing files) in
one :class:`~sitegen.errors.SpecError`. Checks that need torch (architecture
names) live with the models stage and reuse :meth:`Spec.where` to point at the
line.

The package, one job per module (their public names are re-exported here, so
``from sitegen.spec import NetworkSpec`` keeps working):

- :mod:`~sitegen.spec.inputs`: the ``datasets:`` and ``networks:`` sections (and ``train:``);
- :mod:`~sitegen.spec.analyses`: the ``analyses:`` section, one params model per technique;
- :mod:`~sitegen.spec.root`: :class:`Spec` itself, ``diffs:``, ``publish:`` and the JSON Schema;
- :mod:`~sitegen.spec.source`: the YAML file and the line of every node;
- :mod:`~sitegen.spec.messages`: pydantic errors as ``file:line: key: message`` lines;
- :mod:`~sitegen.spec.checks`: checks across sections, and of files on disk;
- :mod:`~sitegen.spec.load`: :func:`load_spec` / :func:`parse_spec`, which tie them together.
"""

from __future__ import annotations

from sitegen.spec.analyses import (
    AblationSpec,
    ActivationMapsSpec,
    ActivationsSpec,
    AnalysesSpec,
    ClassesSpec,
    DistributionSpec,
    EffectSpec,
    EmbeddingSpec,
    EmpiricalRFSpec,
    FeatVisSpec,
    FiltersSpec,
    GradCamSpec,
    InvarianceSpec,
    LayerPick,
    MasksSpec,
    OcclusionSpec,
    ReconstructionSpec,
    SimilarSpec,
    SmoothGradSpec,
    StrokeSpec,
)
from sitegen.spec.checks import NAME_HELP, NAME_PATTERN, ArchCheck
from sitegen.spec.inputs import (
    DatasetSpec,
    MeanStd,
    NetworkSpec,
    Normalization,
    TopClasses,
    TrainSpec,
    UnitChoice,
)
from sitegen.spec.load import load_spec, make_importable, parse_spec
from sitegen.spec.messages import format_validation_errors, problems_by_line
from sitegen.spec.root import DiffSpec, PublishSpec, Spec, json_schema
from sitegen.spec.source import SpecSource

__all__ = [
    "load_spec",
    "parse_spec",
    "json_schema",
    "make_importable",
    "Spec",
    "SpecSource",
    "ArchCheck",
    "format_validation_errors",
    "problems_by_line",
    "NAME_PATTERN",
    "NAME_HELP",
    "DatasetSpec",
    "TopClasses",
    "MeanStd",
    "Normalization",
    "NetworkSpec",
    "UnitChoice",
    "TrainSpec",
    "AnalysesSpec",
    "LayerPick",
    "ReconstructionSpec",
    "FiltersSpec",
    "ActivationMapsSpec",
    "GradCamSpec",
    "OcclusionSpec",
    "EmpiricalRFSpec",
    "FeatVisSpec",
    "EmbeddingSpec",
    "InvarianceSpec",
    "StrokeSpec",
    "SmoothGradSpec",
    "ActivationsSpec",
    "DistributionSpec",
    "SimilarSpec",
    "ClassesSpec",
    "AblationSpec",
    "EffectSpec",
    "MasksSpec",
    "DiffSpec",
    "PublishSpec",
]
