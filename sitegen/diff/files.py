"""The diff's store format: ``store/diffs/<name>/diff.npz`` (per-unit arrays) and ``diff.json``
(metadata, per-layer summaries): its folder name, :func:`write_diff` and :func:`read_diff`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from sitegen import __version__
from sitegen.diff.measures import RBO_P
from sitegen.diff.types import DiffSide, LayerDiff, StoreDiff
from sitegen.errors import DiffError, StoreError
from sitegen.store import Store, codecs
from sitegen.store.manifest import FORMAT

_NAME = re.compile(r"[A-Za-z0-9_.@-]+")
#: diff.json format: 2 added unit matching and CKA (issue 15); format 1 diffs are read as index-matched.
DIFF_FORMAT = 2


def diff_name(a: DiffSide, b: DiffSide) -> str:
    """The folder name of a diff: ``<net>@<ckA>--<net>@<ckB>``, each name slugged.

    Slugging keeps ``[A-Za-z0-9_.-]`` and turns any other run of characters into ``-`` (as
    :func:`sitegen.render.views.slug` does), so ``@`` and ``--`` only ever come from this scheme.

    Example:
        >>> diff_name(DiffSide(p, "alexnet", "epoch 1"), DiffSide(p, "alexnet", "epoch-4"))
        'alexnet@epoch-1--alexnet@epoch-4'
    """

    def s(name: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "x"

    return f"{s(a.network)}@{s(a.checkpoint)}--{s(b.network)}@{s(b.checkpoint)}"


def _diff_dir(store: Store, name: str) -> Path:
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise DiffError(f"diff name {name!r}: use letters, digits and _ . @ - only (see diff_name)")
    return store.root / "diffs" / name


def _side_json(store: Store, side: DiffSide) -> dict:
    root = Path(side.store_root).resolve()
    here = store.root.resolve()
    rel = "." if root == here else os.path.relpath(root, here)
    return {"ref": side.ref, "network": side.network, "checkpoint": side.checkpoint, "store": rel}


def write_diff(store: Store, name: str, diff: StoreDiff) -> None:
    """Write ``store/diffs/<name>/diff.npz`` (per-unit arrays) then ``diff.json`` (format 1:
    metadata and per-layer summaries), each atomically; ``diff.json`` last marks the diff complete.

    Sides living in other stores are recorded by their path relative to ``store`` (docs/INTERNALS.md).

    Args:
        store: the store that holds the diff (the build's store, or the newer side's).
        name: the folder name, normally :func:`diff_name`.
        diff: from :func:`diff_stores`.
    """
    folder = _diff_dir(store, name)
    arrays: dict[str, np.ndarray] = {}
    for lay in diff.layers:
        arrays |= {
            f"{lay.name}/overlap": lay.overlap.astype(np.int64),
            f"{lay.name}/rbo": lay.rbo.astype(np.float64),
            f"{lay.name}/purity_a": lay.purity_a,
            f"{lay.name}/purity_b": lay.purity_b,
            f"{lay.name}/dominant_a": lay.dominant_a,
            f"{lay.name}/dominant_b": lay.dominant_b,
            f"{lay.name}/weighted_a": lay.weighted_a,
            f"{lay.name}/weighted_b": lay.weighted_b,
        }
        if lay.cosine is not None:
            arrays[f"{lay.name}/cosine"] = lay.cosine.astype(np.float64)
        if lay.match is not None:
            arrays[f"{lay.name}/match"] = lay.match.astype(np.int64)
        if lay.match_r is not None:
            arrays[f"{lay.name}/match_r"] = lay.match_r.astype(np.float64)
    if diff.cka is not None:
        arrays["cka"] = diff.cka.astype(np.float64)
    codecs.write_npz(folder / "diff.npz", arrays)
    doc = {
        "format": DIFF_FORMAT,
        "name": name,
        "created": diff.created,
        "sitegen_version": __version__,
        "a": _side_json(store, diff.a),
        "b": _side_json(store, diff.b),
        "dataset": diff.dataset,
        "fingerprint": diff.fingerprint,
        "class_names": list(diff.class_names),
        "top_k": diff.top_k,
        "accuracy": {"a": diff.accuracy_a, "b": diff.accuracy_b, "change": diff.accuracy_change},
        "weights": diff.has_weights,
        "matching": diff.matching,
        "cka": diff.cka is not None,
        "images": diff.images,
        "layers": [
            {
                "name": lay.name,
                "units": lay.units,
                "mean_overlap": lay.mean_overlap,
                "mean_rbo": lay.mean_rbo,
                "rbo_p": RBO_P,
                "l1": lay.l1,
                "js": lay.js,
                "mean_purity_change": lay.mean_purity_change,
                "dominant_changed": lay.dominant_changed,
                "mean_cosine": lay.mean_cosine,
                "mean_match_r": lay.mean_match_r,
                "identity": lay.identity,
                "top": {"a": lay.top_a, "b": lay.top_b, "entered": lay.entered_top, "left": lay.left_top},
                "bottom": {
                    "a": lay.bottom_a,
                    "b": lay.bottom_b,
                    "entered": lay.entered_bottom,
                    "left": lay.left_bottom,
                },
            }
            for lay in diff.layers
        ],
    }
    codecs.write_json(folder / "diff.json", doc)


def read_diff(store: Store, name: str) -> StoreDiff:
    """Read what :func:`write_diff` wrote; side store paths come back resolved against ``store``.

    Raises:
        StoreError: the diff is missing, unreadable, of another format, or lacks an array.
    """
    folder = _diff_dir(store, name)
    path = folder / "diff.json"
    hint = "rerun `sitegen build` (or `sitegen diff`)"
    if not path.is_file():
        raise StoreError(f"{path}: missing; the store is incomplete, {hint}")
    try:
        doc = codecs.read_json(path)
        arrays = codecs.read_npz(folder / "diff.npz")
    except FileNotFoundError:
        raise StoreError(f"{folder / 'diff.npz'}: missing; the store is incomplete, {hint}") from None
    except (OSError, ValueError) as e:
        raise StoreError(f"{folder}: unreadable diff ({e}); {hint}") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt not in (FORMAT, DIFF_FORMAT):  # format 1: index-matched, no CKA (the keys below are absent)
        reads = f"this sitegen reads formats 1 and {DIFF_FORMAT}"
        raise StoreError(f"{path}: diff format {fmt!r}, {reads}; {hint}")

    def side(d: dict) -> DiffSide:
        rel = str(d["store"])
        root = store.root if rel == "." else Path(os.path.normpath(store.root / rel))
        return DiffSide(root, str(d["network"]), str(d["checkpoint"]))

    try:
        layers = []
        for lay in doc["layers"]:
            n = lay["name"]
            layers.append(
                LayerDiff(
                    name=n,
                    overlap=arrays[f"{n}/overlap"],
                    rbo=arrays[f"{n}/rbo"],
                    purity_a=arrays[f"{n}/purity_a"],
                    purity_b=arrays[f"{n}/purity_b"],
                    dominant_a=arrays[f"{n}/dominant_a"],
                    dominant_b=arrays[f"{n}/dominant_b"],
                    cosine=arrays.get(f"{n}/cosine"),
                    weighted_a=arrays[f"{n}/weighted_a"],
                    weighted_b=arrays[f"{n}/weighted_b"],
                    l1=float(lay["l1"]),
                    js=float(lay["js"]),
                    top_a=tuple(lay["top"]["a"]),
                    top_b=tuple(lay["top"]["b"]),
                    bottom_a=tuple(lay["bottom"]["a"]),
                    bottom_b=tuple(lay["bottom"]["b"]),
                    match=arrays.get(f"{n}/match"),
                    match_r=arrays.get(f"{n}/match_r"),
                    identity=None if lay.get("identity") is None else float(lay["identity"]),
                )
            )
        matching = str(doc.get("matching", "index"))
        if matching not in ("index", "hungarian"):
            raise ValueError(f"matching {matching!r}")
        if matching == "hungarian" and any(lay.match is None for lay in layers):
            raise KeyError("<layer>/match")
        cka = arrays.get("cka") if doc.get("cka") else None
        if doc.get("cka") and (cka is None or cka.shape != (len(layers), len(layers))):
            raise KeyError("cka")
        return StoreDiff(
            a=side(doc["a"]),
            b=side(doc["b"]),
            dataset=str(doc["dataset"]),
            fingerprint=str(doc["fingerprint"]),
            class_names=tuple(doc["class_names"]),
            top_k=int(doc["top_k"]),
            accuracy_a=float(doc["accuracy"]["a"]),
            accuracy_b=float(doc["accuracy"]["b"]),
            layers=tuple(layers),
            created=str(doc.get("created", "")),
            matching=matching,
            cka=cka,
            images=int(doc.get("images", 0)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"{folder}: malformed diff ({type(e).__name__}: {e}); {hint}") from None
