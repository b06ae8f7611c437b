"""What a network's store entries cover: its checkpoints, the ones built, the units with pages.

Once training ran (or the spec's checkpoints are read) a network's checkpoint names are known: the
``atlas:``, ``evolution:`` and ``diffs:`` lists must name them (SpecError otherwise, naming the
spec's key and the checkpoints there are); once a model is loaded, its layer table decides which
units get pages. The names checkable before any work are checked earlier, by
:func:`sitegen.plan.check_spec_against_models`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from sitegen.errors import SpecError
from sitegen.plan import unit_problems
from sitegen.spec import NetworkSpec, Spec
from sitegen.store.manifest import evenly_spaced


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    name: str
    source: str | None  # file path, torchvision weights name, or None (random init)
    epoch: int | None = None


def _atlas_names(spec: Spec, net_name: str, net: NetworkSpec, names: list[str]) -> list[str]:
    if net.atlas == "last":
        return names[-1:]
    if net.atlas == "all":
        return names
    return _known_checkpoints(spec, net_name, "atlas", net.atlas, names)


def _evolution_names(spec: Spec, net_name: str, net: NetworkSpec, names: list[str]) -> set[str]:
    if net.evolution is True:
        return set(names)
    if not net.evolution:
        return set()
    return set(_known_checkpoints(spec, net_name, "evolution", net.evolution, names))


def _known_checkpoints(spec: Spec, net_name: str, key: str, listed: list[str], names: list[str]) -> list[str]:
    """``listed`` (the spec's ``networks.<net>.<key>``) when every name is a checkpoint, else SpecError."""
    unknown = [n for n in listed if n not in names]
    if unknown:
        raise SpecError(
            [
                spec.problem(
                    ("networks", net_name, key), f"unknown checkpoints {unknown}; this network has {names}"
                )
            ]
        )
    return list(listed)


def _diff_names(spec: Spec, net_name: str, names: list[str]) -> set[str]:
    wanted, problems = set(), []
    for i, d in enumerate(spec.diffs):
        for side in ("a", "b"):
            ref_net, _, ck = getattr(d, side).partition("@")
            if ref_net != net_name:
                continue
            if ck not in names:
                problems.append(
                    spec.problem(("diffs", i, side), f"{net_name} has no checkpoint {ck!r}; it has {names}")
                )
            wanted.add(ck)
    if problems:
        raise SpecError(problems)
    return wanted


def _shown_units(net: NetworkSpec, info, seed: int, *, sample: int | None = None) -> list[int]:
    """Units with pages: all, a deterministic sample (seeded by layer name), or a list (clipped).

    ``sample``: then only that many of them, evenly spaced, as the feature-evolution pages pick
    them (:data:`sitegen.store.manifest.EVOLUTION_UNITS`).
    """
    choice = net.units.get(info.name, "all") if isinstance(net.units, dict) else net.units
    if choice == "all":
        units = list(range(info.units))
    elif isinstance(choice, int):
        if choice >= info.units:
            units = list(range(info.units))
        else:
            rng = np.random.default_rng([seed, zlib.crc32(info.name.encode())])
            units = sorted(int(u) for u in rng.choice(info.units, size=choice, replace=False))
    else:
        units = sorted({u for u in choice if u < info.units})
    return evenly_spaced(units, sample) if sample is not None else units


def _check_units(spec: Spec, net_name: str, net: NetworkSpec, layers: tuple) -> None:
    """A units mapping must name layers of the network, and its indices exist (:func:`unit_problems`)."""
    problems = unit_problems(spec, net_name, net, layers)
    if problems:
        raise SpecError(problems)
