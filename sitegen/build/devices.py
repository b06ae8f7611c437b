"""The device a build runs on and the architectures it builds, checked before any work.

Also the layer table of a spec network or an arch string, built with random weights, for
``sitegen layers``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sitegen.errors import DeviceError, SpecError
from sitegen.models import build_model, check_arch, layer_table
from sitegen.spec import Spec, load_spec


def resolve_device(spec: Spec) -> torch.device:
    """``auto`` → cuda, then mps, then cpu; an explicit device must exist (DeviceError otherwise)."""
    want = spec.device
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if want == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if has_mps else "cpu")
    if want.startswith("cuda"):
        n = torch.cuda.device_count()
        index = int(want.split(":")[1]) if ":" in want else 0
        if index >= n:
            found = f"{n} CUDA device(s)" if n else "no CUDA device (torch.cuda.is_available() is False)"
            raise DeviceError(
                spec.problem(
                    ("device",), f"{want!r} requested but this machine has {found}; use device: auto or cpu"
                )
            )
    if want == "mps" and not has_mps:
        raise DeviceError(
            spec.problem(("device",), "'mps' requested but not available; use device: auto or cpu")
        )
    return torch.device(want)


def _check_archs(spec: Spec) -> None:
    problems = []
    for name, net in spec.networks.items():
        message = check_arch(net.arch)
        if message:
            problems.append(spec.problem(("networks", name, "arch"), message))
    if problems:
        raise SpecError(problems)


def layer_table_for(target: str, *, spec_path: Path, input_size: int | None, num_classes: int) -> tuple:
    """The layer table of a spec network (by name) or of an arch string (``sitegen layers``)."""
    if spec_path.is_file() and ":" not in target:
        spec = load_spec(spec_path)
        if target in spec.networks:
            net = spec.networks[target]
            ds = spec.datasets[net.dataset]
            _check_archs(spec)
            size = input_size or ds.image_size
            classes = _class_count_hint(ds, num_classes)
            return layer_table(build_model(net.arch, classes, input_size=size), size, net.layers)
    message = check_arch(target)
    if message:
        raise SpecError([f"{target}: {message}"])
    size = input_size or 224
    return layer_table(build_model(target, num_classes, input_size=size), size, "auto")


def _class_count_hint(ds, default: int) -> int:
    """Classes of a dataset without loading it (only the head's width depends on it)."""
    if not ds.builtin:
        return default
    from sitegen.doodles import CLASSES

    if ds.classes == "all":
        return len(CLASSES)
    if isinstance(ds.classes, list):
        return len(ds.classes)
    return min(ds.classes.top, len(CLASSES))
