"""The registry of analysis kinds: one analysis contract for build and render (issue 12).

A kind is one analysis module ``sitegen/analyses/<kind>.py``, its spec section (``Params``), its
store document (:mod:`sitegen.store.formats`) and one render section
``sitegen/render/sections/<kind>.py`` with its partial ``templates/_<kind>.html``. An analysis
module exports::

    KIND = "gradcam"
    Params = GradCamSpec                       # the spec section (sitegen.spec: torch-free)
    @dataclass(frozen=True) class Result: ...  # numpy arrays and plain values
    def run(ctx: Context, mined: Mined, params: Params) -> Result | None   # None: nothing to show
    def save(ctx: Context, result: Result, out: Path) -> GradCamDoc        # images under out/
    def check(params, layers, problem, network) -> None                    # optional: layer names

This module is torch-free: render finds its sections here too. Modules are imported when first
used (:meth:`Kind.analysis`, :meth:`Kind.section`), so importing the registry imports neither torch
nor the templates. Registration order is the order of ``manifest.techniques``, of the build loop and
of the sections on every page.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from sitegen.errors import SpecError

# The params and document of every kind, from the modules that define them (not the package
# re-exports), so that adding a kind edits only those modules and this one (docs/INTERNALS.md).
from sitegen.spec.analyses import (
    AnalysesSpec,
    ClassesSpec,
    DistributionSpec,
    EffectSpec,
    EmbeddingSpec,
    EmpiricalRFSpec,
    FeatVisSpec,
    GradCamSpec,
    InvarianceSpec,
    LayerPick,
    MasksSpec,
    OcclusionSpec,
    SimilarSpec,
    SmoothGradSpec,
    StrokeSpec,
)
from sitegen.store.formats.base import AnalysisDoc
from sitegen.store.formats.classes import ClassesDoc, EffectDoc, StrokeDoc
from sitegen.store.formats.probes import EmbeddingDoc, GradCamDoc, InvarianceDoc, OcclusionDoc, SmoothGradDoc
from sitegen.store.formats.similarity import SimilarDoc
from sitegen.store.formats.units import DistributionDoc, ErfDoc, FeatVisDoc, MasksDoc

if TYPE_CHECKING:
    import numpy as np
    import torch

    from sitegen.models.types import LayerInfo, LoadedModel

log = logging.getLogger("sitegen")

#: Layer kinds with a spatial output (LayerInfo.kind): the default layers of most techniques.
SPATIAL = ("conv", "block")

Problem = Callable[[tuple, str], str]


@dataclass(frozen=True, slots=True)
class Kind:
    """One registered analysis kind.

    Attributes:
        name: the kind: file ``<name>.json``, manifest entry, module and section name.
        field: the :class:`~sitegen.spec.AnalysesSpec` attribute holding its params (``empirical_rf``
            for ``erf``).
        params: its spec section class (the analysis module's ``Params``).
        doc: its store document class.
    """

    name: str
    field: str
    params: type[BaseModel]
    doc: type[AnalysisDoc]

    def settings(self, a: AnalysesSpec) -> Any:
        """This kind's params in a spec's ``analyses:`` section."""
        return getattr(a, self.field)

    def enabled(self, a: AnalysesSpec) -> bool:
        return bool(self.settings(a).enabled)

    def analysis(self) -> ModuleType:
        """The analysis module (imports torch)."""
        return importlib.import_module(f"sitegen.analyses.{self.name}")

    def section(self) -> ModuleType:
        """The render section (torch-free)."""
        return importlib.import_module(f"sitegen.render.sections.{self.name}")


REGISTRY: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add a kind; a name or spec field registered twice raises (torchvision ``register_model``)."""
    if kind.name in REGISTRY:
        raise ValueError(f"analysis kind {kind.name!r} is already registered")
    if any(k.field == kind.field for k in REGISTRY.values()):
        raise ValueError(f"analyses.{kind.field} already belongs to another analysis kind")
    if kind.doc.KIND != kind.name:
        raise ValueError(f"{kind.doc.__name__}.KIND is {kind.doc.KIND!r}, not {kind.name!r}")
    REGISTRY[kind.name] = kind
    return kind


# Order: network-page sections first, then those of layer and unit pages (featvis before stroke
# on layer pages, featvis before erf on unit pages), as the pages showed them before issue 12.
register(Kind("gradcam", "gradcam", GradCamSpec, GradCamDoc))
register(Kind("occlusion", "occlusion", OcclusionSpec, OcclusionDoc))
register(Kind("embedding", "embedding", EmbeddingSpec, EmbeddingDoc))
register(Kind("invariance", "invariance", InvarianceSpec, InvarianceDoc))
register(Kind("smoothgrad", "smoothgrad", SmoothGradSpec, SmoothGradDoc))
register(Kind("featvis", "featvis", FeatVisSpec, FeatVisDoc))
register(Kind("distribution", "distribution", DistributionSpec, DistributionDoc))
register(Kind("effect", "effect", EffectSpec, EffectDoc))
register(Kind("similar", "similar", SimilarSpec, SimilarDoc))
register(Kind("stroke", "stroke", StrokeSpec, StrokeDoc))
register(Kind("erf", "empirical_rf", EmpiricalRFSpec, ErfDoc))
# Unit pages: outlines over the top-k images (issue 15, item 7), and its key card after erf.
register(Kind("masks", "masks", MasksSpec, MasksDoc))
# No section on network, layer or unit pages: its documents feed the class pages (render/classes.py).
register(Kind("classes", "classes", ClassesSpec, ClassesDoc))


def names() -> tuple[str, ...]:
    """Every registered kind, in order."""
    return tuple(REGISTRY)


def enabled(a: AnalysesSpec) -> list[Kind]:
    """The kinds a spec's ``analyses:`` section turns on, in order."""
    return [k for k in REGISTRY.values() if k.enabled(a)]


def technique_fields() -> set[str]:
    """The ``analyses:`` keys that belong to registered kinds (each kind caches on its own)."""
    return {k.field for k in REGISTRY.values()}


# --- the one context ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """What every analysis gets from the build, for one checkpoint (frozen: analyses return values).

    Attributes:
        loaded: the network, loaded and in eval mode.
        network: its name (for messages).
        image: probe index -> un-normalized ``[3, H, W]`` float tensor in [0, 1].
        picture: probe index -> uint8 ``[H, W, 3]`` (thumbnails, overlays, stroke statistics).
        class_names: the dataset's classes.
        labels: int64 ``[N]``: true class of every probe image.
        shown: layer -> units with pages.
        weighted: layer -> rank-weighted class preference ``[C]``.
        device: where to compute.
        seed: the spec's seed.
        problem: ``spec.problem``: ``(loc, message) -> "file:line: key: message"`` for SpecErrors.
        progress: ``(what, done, total)`` callback.
    """

    loaded: LoadedModel
    network: str
    image: Callable[[int], torch.Tensor]
    picture: Callable[[int], np.ndarray]
    class_names: Sequence[str]
    labels: np.ndarray
    shown: dict[str, list[int]]
    weighted: dict[str, np.ndarray]
    device: torch.device
    seed: int
    problem: Problem
    progress: Callable[[str, int, int], None] = lambda _what, _done, _total: None

    def batch(self, picks: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """Probe images ``picks`` as one ``[B, 3, H, W]`` tensor, and their true classes."""
        import torch

        return torch.stack([self.image(i) for i in picks]), [int(self.labels[i]) for i in picks]


def rounded(a: Any, digits: int = 4) -> list:
    """Nested lists of floats rounded to ``digits`` (what the JSON documents store)."""
    import numpy as np

    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


# --- layer names --------------------------------------------------------------------------------------


def check_layers(a: AnalysesSpec, layers: Sequence[LayerInfo], problem: Problem, network: str) -> None:
    """Raise the SpecError an enabled analysis would raise for its layer names, before any work."""
    problems = layer_problems(a, layers, problem, network)
    if problems:
        raise SpecError(problems)


def layer_problems(a: AnalysesSpec, layers: Sequence[LayerInfo], problem: Problem, network: str) -> list[str]:
    """Every enabled kind's layer-name problems (its ``check``), collected: all reported at once."""
    problems: list[str] = []
    for kind in enabled(a):
        check = getattr(kind.analysis(), "check", None)
        if check is None:
            continue
        try:
            check(kind.settings(a), layers, problem, network)
        except SpecError as e:
            problems += e.problems
    return problems


def pick_layers(
    pick: LayerPick, layers: Sequence[LayerInfo], problem: Problem, loc: tuple, network: str
) -> list[LayerInfo]:
    """``conv``: every conv/block layer; ``last``: the last one; a list: those of this network.

    A list may name layers of several networks (each uses its own); a name matching no layer of this
    network is skipped with a warning, and a list matching none is an error.
    """
    spatial = [info for info in layers if info.kind in SPATIAL]
    if pick == "conv":
        return spatial
    if pick == "last":
        return spatial[-1:]
    by_name = {info.name: info for info in layers}
    got = [by_name[name] for name in pick if name in by_name]
    missing = [name for name in pick if name not in by_name]
    if not got:
        raise SpecError(
            [problem(loc, f"none of {list(pick)} is a layer of {network}; layers: {list(by_name)}")]
        )
    if missing:
        log.warning("%s: %s: no layer(s) %s here; skipped", network, ".".join(map(str, loc)), missing)
    return got


def one_layer(
    name: str | None, layers: Sequence[LayerInfo], problem: Problem, loc: tuple, network: str
) -> LayerInfo | None:
    """A layer by friendly name or module path; ``None``: the last conv/block layer (None if none)."""
    if name is None:
        spatial = [info for info in layers if info.kind in SPATIAL]
        return spatial[-1] if spatial else None
    for info in layers:
        if name in (info.name, info.module):
            return info
    raise SpecError([problem(loc, f"no layer {name!r} in {network}; layers: {[i.name for i in layers]}")])


__all__ = [
    "REGISTRY",
    "SPATIAL",
    "Context",
    "Kind",
    "check_layers",
    "enabled",
    "layer_problems",
    "names",
    "one_layer",
    "pick_layers",
    "register",
    "rounded",
]
