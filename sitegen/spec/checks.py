"""Checks across sections on the raw data: names, references between sections, files on disk."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sitegen.spec.source import SpecSource, _dotted

ArchCheck = Callable[[str], "str | None"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
NAME_HELP = "letters, digits, '_', '.', '-' (it becomes part of URLs and file names)"


def _cross_checks(data: dict, source: SpecSource, arch_check: ArchCheck | None) -> list[str]:
    """References between sections, files on disk and (optionally) arch names, on the raw data.

    Runs even when the structure has errors, so one run reports everything.
    """
    problems: list[str] = []

    def add(loc: tuple, message: str) -> None:
        problems.append(f"{source.where(loc)}: {_dotted(loc)}: {message}")

    datasets: dict[Any, Any] = data["datasets"] if isinstance(data.get("datasets"), dict) else {}
    networks: dict[Any, Any] = data["networks"] if isinstance(data.get("networks"), dict) else {}
    for kind, names in (("datasets", datasets), ("networks", networks)):
        for name in names:
            if not re.match(NAME_PATTERN, str(name)):
                add((kind, name), f"name {name!r} must use {NAME_HELP}")
    for name, ds in datasets.items():
        for key in ("path", "train_path", "probe_path"):
            p = ds.get(key) if isinstance(ds, dict) else None
            if isinstance(p, str) and not Path(p).is_dir():
                add(("datasets", name, key), f"folder not found: {p}")
    for name, net in networks.items():
        if not isinstance(net, dict):
            continue
        arch = net.get("arch")
        if isinstance(arch, str) and arch_check is not None:
            message = arch_check(arch)
            if message:
                add(("networks", name, "arch"), message)
        ds_name = net.get("dataset")
        if isinstance(ds_name, str) and ds_name not in datasets:
            add(
                ("networks", name, "dataset"),
                f"unknown dataset {ds_name!r}{_did_you_mean(ds_name, datasets)}",
            )
        weights = net.get("weights")
        if isinstance(weights, str) and _looks_like_path(weights) and not Path(weights).is_file():
            add(("networks", name, "weights"), f"checkpoint file not found: {weights}")
        checkpoints: dict[Any, Any] = net["checkpoints"] if isinstance(net.get("checkpoints"), dict) else {}
        for ck, path in checkpoints.items():
            if not re.match(NAME_PATTERN, str(ck)):
                add(("networks", name, "checkpoints", ck), f"name must use {NAME_HELP}")
            if isinstance(path, str) and not Path(path).is_file():
                add(("networks", name, "checkpoints", ck), f"checkpoint file not found: {path}")
        if net.get("train") is not None and (weights or checkpoints):
            add(("networks", name, "train"), "train: starts from random weights; drop weights/checkpoints")
    diffs: list[Any] = data["diffs"] if isinstance(data.get("diffs"), list) else []
    for i, d in enumerate(diffs):
        for side in ("a", "b"):
            ref = d.get(side) if isinstance(d, dict) else None
            if not isinstance(ref, str):
                continue
            net_name, sep, ck = ref.partition("@")
            if not sep or not ck:
                add(("diffs", i, side), f"expected 'NETWORK@CHECKPOINT', got {ref!r}")
            elif net_name not in networks:
                add(("diffs", i, side), f"unknown network {net_name!r}{_did_you_mean(net_name, networks)}")
    return problems


def _looks_like_path(weights: str) -> bool:
    return (
        "/" in weights or "\\" in weights or Path(weights).suffix in (".pt", ".pth", ".bin", ".ckpt", ".tar")
    )


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(options))}"
