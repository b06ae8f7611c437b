"""Loading: read the YAML, resolve its paths, validate, cross-check, report every problem at once."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sitegen.errors import SpecError
from sitegen.spec.checks import ArchCheck, _cross_checks, _looks_like_path
from sitegen.spec.messages import format_validation_errors, problems_by_line
from sitegen.spec.root import Spec
from sitegen.spec.source import SpecSource, _dotted, _node_lines


def _resolve_paths(data: dict, base: Path) -> None:
    """Make relative paths in the raw data relative to the spec file's folder (in place)."""

    def fix(v: Any) -> Any:
        return str((base / v).resolve()) if isinstance(v, str) and not Path(v).is_absolute() else v

    if isinstance(data.get("output"), str) or "output" not in data:
        data["output"] = fix(data.get("output", "output"))
    datasets, networks = data.get("datasets"), data.get("networks")  # a non-mapping: validation says so
    for ds in (datasets.values() if isinstance(datasets, dict) else ()):
        if isinstance(ds, dict):
            for key in ("path", "train_path", "probe_path"):
                if key in ds:
                    ds[key] = fix(ds[key])
    for net in (networks.values() if isinstance(networks, dict) else ()):
        if not isinstance(net, dict):
            continue
        if isinstance(net.get("weights"), str) and _looks_like_path(net["weights"]):
            net["weights"] = fix(net["weights"])
        cks = net.get("checkpoints")
        if isinstance(cks, dict):
            net["checkpoints"] = {k: fix(v) for k, v in cks.items()}
        elif isinstance(cks, list):
            net["checkpoints"] = {Path(str(p)).stem: fix(p) for p in cks}


def parse_spec(
    text: str, path: Path = Path("experiments.yaml"), *, arch_check: ArchCheck | None = None
) -> Spec:
    """Validate spec text; relative paths are taken relative to ``path``'s folder.

    Raises:
        SpecError: with every problem found, each as ``file:line: key: message``.
    """
    name = path.name
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise SpecError([f"{where}: YAML syntax error: {e.problem or e}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{name}:1: (top level): expected a mapping with datasets: and networks:"])
    lines: dict[tuple, int] = {}
    dup: list[tuple[tuple, str]] = []
    _node_lines(node, (), lines, dup)
    source = SpecSource(path, text, lines)
    problems = [f"{source.where(loc)}: {_dotted(loc)}: {msg}" for loc, msg in dup]
    _resolve_paths(data, path.parent.resolve())
    spec = None
    try:
        spec = Spec.model_validate(data)
    except ValidationError as e:
        problems += format_validation_errors(e, data, source)
    problems += _cross_checks(data, source, arch_check)
    if problems:
        raise SpecError(problems_by_line(problems))
    assert spec is not None
    spec._source = source
    return spec


def load_spec(path: str | Path, *, arch_check: ArchCheck | None = None) -> Spec:
    """Load and validate an experiment spec.

    Args:
        path: the YAML file (relative paths inside it are relative to its folder).
        arch_check: optional ``arch -> error message or None`` (``sitegen.models.check_arch``): kept
            outside this module so that loading a spec never imports torch.

    Returns:
        The validated, frozen :class:`Spec`.

    Raises:
        SpecError: the file is missing or has problems (all of them listed).

    Example:
        >>> spec = load_spec("experiments.yaml")  # doctest: +SKIP
        >>> list(spec.networks)  # doctest: +SKIP
        ['alexnet', 'vgg']
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(
            [f"{path}: spec file not found (create one, or run in a folder holding experiments.yaml)"]
        )
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError([f"{path}: cannot read the spec: {e.strerror or e}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise SpecError(
            [f"{path}:{line}: not UTF-8 text (byte 0x{raw[e.start]:02x}): save the spec as UTF-8"]
        ) from None
    make_importable(path.parent)
    return parse_spec(text, path, arch_check=arch_check)


def make_importable(folder: Path) -> None:
    """Put the spec's folder first on ``sys.path``, so ``arch: mynets:LeNet`` finds ``mynets.py`` beside it.

    As pytest (rootdir) and uvicorn / fastapi-cli (the working directory) do for the app they load:
    a lab keeps its model code next to its experiments, and needs no PYTHONPATH. Once per folder.
    """
    entry = str(folder.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()
