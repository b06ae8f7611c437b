"""Planning: every name in a spec checked against its datasets and untrained networks, before any work.

A spec can be valid YAML of the right shape and still name things that do not exist: a layer, a unit
index past a layer's width, a class, a technique's layer, a checkpoint in ``atlas:`` or ``diffs:``.
Those names can only be checked against the data (class folders) and the networks (their layer
tables), so :func:`check_spec_against_models` lists the classes of every dataset (no image is
decoded) and builds every network with random weights (no checkpoint is read), then reports ALL
problems in one :class:`~sitegen.errors.SpecError`, each as ``file:line: key: message``. The build
calls it before loading data, training or mining (issue 11): a typo costs seconds, not a training run.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import replace
from pathlib import Path

import torch

from sitegen.analyses import registry
from sitegen.data import list_classes
from sitegen.errors import DataError, ModelError, SpecError, StoreError
from sitegen.models import LayerInfo, build_model, check_weights, layer_table, weights_meta
from sitegen.models.checkpoint import is_weights_name
from sitegen.spec import NetworkSpec, Spec, problems_by_line
from sitegen.store import Store

__all__ = ["check_spec_against_models", "check_output", "unit_problems", "checkpoint_names"]


def check_spec_against_models(spec: Spec) -> dict[str, tuple[LayerInfo, ...]]:
    """Check every name in ``spec`` against its datasets' classes and its untrained networks.

    Args:
        spec: a validated spec (:func:`sitegen.spec.load_spec`), architectures already checked.

    Returns:
        The layer table of every network whose checks ran, by network name.

    Raises:
        SpecError: with every problem found: the output path, datasets (missing folders, unknown
            classes, fewer than two classes), architectures that fail to build, weights names and
            checkpoint files (read safely? fit the network? tensors memory-mapped, not read), layers,
            units (names and indices), technique layers, and checkpoint names in ``atlas:``/``diffs:``.

    Example:
        >>> tables = check_spec_against_models(load_spec("experiments.yaml"))  # doctest: +SKIP
        >>> [info.name for info in tables["alexnet"]][:2]  # doctest: +SKIP
        ['conv1', 'conv2']
    """
    problems = check_output(spec)
    classes: dict[str, int | None] = {}
    for name in dict.fromkeys(net.dataset for net in spec.networks.values()):
        try:
            classes[name] = len(list_classes(name, spec.datasets[name]))
        except DataError as e:
            classes[name] = None
            problems.append(spec.problem(("datasets", name), str(e)))

    tables: dict[str, tuple[LayerInfo, ...]] = {}
    for net_name, net in spec.networks.items():
        n_classes = classes[net.dataset]
        net_problems, table = _check_network(spec, net_name, net, n_classes)
        problems += net_problems
        if table is not None:
            tables[net_name] = table
    if problems:
        raise SpecError(problems_by_line(problems))
    return tables


def check_output(spec: Spec) -> list[str]:
    """``output:`` must be a folder, or not exist yet, and be writable (nothing is created here)."""
    path = Path(spec.output)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = f"{p} is" if p == path else f"{path} lies inside {p}, which is"
                return [spec.problem(("output",), f"{what} a file, not a folder; point output: at a folder")]
            break
    try:
        Store(path / "store").check_writable()
    except StoreError as e:
        return [spec.problem(("output",), str(e))]
    return []


def _check_network(
    spec: Spec, net_name: str, net: NetworkSpec, n_classes: int | None
) -> tuple[list[str], tuple[LayerInfo, ...] | None]:
    where = ("networks", net_name)
    problems: list[str] = []
    if net.weights:
        try:
            weights_meta(net.arch, net.weights)
        except ModelError as e:
            problems.append(spec.problem((*where, "weights"), str(e)))
    problems += _checkpoint_name_problems(spec, net_name, net)

    size = spec.datasets[net.dataset].image_size
    with torch.random.fork_rng(devices=[]):  # random init here must not shift the build's random draws
        try:
            module = build_model(net.arch, n_classes or 2, input_size=size)
        except ModelError as e:
            return [*problems, spec.problem((*where, "arch"), str(e))], None
    problems += _checkpoint_problems(spec, net_name, net, module)
    listed: Set[str] = frozenset()
    try:
        table = layer_table(module, size, net.layers)
    except ModelError as e:
        if net.layers == "auto":
            return [*problems, spec.problem((*where, "arch"), str(e))], None
        problems.append(spec.problem((*where, "layers"), str(e)))
        # check the other names still, against the automatic set plus the names listed (reported above)
        table, listed = layer_table(module, size, "auto"), set(net.layers)
    # without the dataset's classes the width of prob is a guess: its indices are not checked
    problems += unit_problems(spec, net_name, net, table, check_prob=n_classes is not None, listed=listed)
    problems += _technique_problems(spec, net_name, table, listed)
    return problems, None if listed else table


def _checkpoint_problems(spec: Spec, net_name: str, net: NetworkSpec, module: torch.nn.Module) -> list[str]:
    """Local checkpoint files must read safely and fit the network (keys and shapes; tensors unread)."""
    files: list[tuple[tuple[str | int, ...], str]] = []
    if net.weights and not is_weights_name(net.weights):
        files.append((("networks", net_name, "weights"), net.weights))
    files += [(("networks", net_name, "checkpoints", name), str(p)) for name, p in net.checkpoints.items()]
    problems = []
    for loc, path in files:
        try:
            check_weights(module, path, arch=net.arch)
        except ModelError as e:
            problems.append(spec.problem(loc, str(e)))
    return problems


def unit_problems(
    spec: Spec,
    net_name: str,
    net: NetworkSpec,
    layers: Sequence[LayerInfo],
    *,
    check_prob: bool = True,
    listed: Set[str] = frozenset(),
) -> list[str]:
    """``units:`` must name layers of the network, and unit indices must exist in their layer.

    A mapping ``{layer: [indices]}`` is strict: ``conv1: [0, 5000]`` on a 64-unit conv1 is an error
    (it used to be dropped silently). One list for every layer keeps the indices each layer has, and
    is an error only when an index exists in no layer. ``listed``: names to take as layers without
    their width (a ``layers:`` list that failed to resolve, reported on its own).
    """
    names = [info.name for info in layers]
    by_name = {info.name: info for info in layers}
    loc = ("networks", net_name, "units")
    problems = []
    if isinstance(net.units, dict):
        for layer, choice in net.units.items():
            info = by_name.get(layer)
            if info is None and layer in listed:
                continue
            if info is None:
                message = f"no layer {layer!r} in this network; layers: {names}"
                problems.append(spec.problem((*loc, layer), message))
                continue
            if isinstance(choice, list) and (check_prob or info.kind != "prob"):
                bad = sorted({u for u in choice if u >= info.units})
                if bad:
                    problems.append(
                        spec.problem(
                            (*loc, layer),
                            f"unit {_listing(bad)} out of range: layer {layer!r} has {info.units} units "
                            f"(0..{info.units - 1})",
                        )
                    )
    elif isinstance(net.units, list) and layers:
        widest = max(info.units for info in layers)
        bad = sorted({u for u in net.units if u >= widest})
        if bad:
            problems.append(
                spec.problem(
                    loc, f"unit {_listing(bad)} out of range in every layer: the widest has {widest} units"
                )
            )
    return problems


def _listing(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:5])) + (", ..." if len(indices) > 5 else "")
    return shown if len(indices) == 1 else f"indices {shown}"


def _technique_problems(
    spec: Spec, net_name: str, layers: Sequence[LayerInfo], listed: Set[str]
) -> list[str]:
    """Layer names under ``analyses:``: each enabled kind's own ``check`` (:mod:`sitegen.analyses.registry`).

    When ``layers:`` failed, ``layers`` is the automatic set and ``listed`` the names the spec lists:
    those count as known (stand-ins with their names), so only a name in neither is reported.
    """
    have = {n for info in layers for n in (info.name, info.module)}
    stand_ins = [replace(layers[0], name=n, module=n) for n in sorted(listed - have)] if layers else []
    return registry.layer_problems(spec.analyses, [*layers, *stand_ins], spec.problem, net_name)


def checkpoint_names(net: NetworkSpec) -> list[str]:
    """The checkpoint names a network will have, known before training (as the build names them)."""
    if net.train:
        return [f"epoch-{e}" for e in range(1, net.train.epochs + 1)]
    if net.checkpoints:
        return list(net.checkpoints)
    if net.weights:
        return [Path(net.weights).stem if Path(net.weights).suffix else net.weights]
    return ["init"]


def _checkpoint_name_problems(spec: Spec, net_name: str, net: NetworkSpec) -> list[str]:
    names = checkpoint_names(net)
    problems = []
    if isinstance(net.atlas, list):
        unknown = [n for n in net.atlas if n not in names]
        if unknown:
            message = f"unknown checkpoints {unknown}; this network has {names}"
            problems.append(spec.problem(("networks", net_name, "atlas"), message))
    for i, d in enumerate(spec.diffs):
        for side in ("a", "b"):
            ref_net, _, ck = getattr(d, side).partition("@")
            if ref_net == net_name and ck not in names:
                problems.append(
                    spec.problem(("diffs", i, side), f"{net_name} has no checkpoint {ck!r}; it has {names}")
                )
    return problems
