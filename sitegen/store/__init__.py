"""The artifact store: the one contract between compute and render, and between builds.

Layout and formats: docs/INTERNALS.md. The store never imports torch.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from sitegen.errors import StoreError
from sitegen.store import codecs
from sitegen.store.formats import FORMAT as ANALYSIS_FORMAT
from sitegen.store.formats import AnalysisDoc
from sitegen.store.manifest import (
    FORMAT,
    BuildRecord,
    CheckpointManifest,
    DatasetRecord,
    NetworkRecord,
)

__all__ = ["Store", "FORMAT", "BuildRecord", "CheckpointManifest", "DatasetRecord", "NetworkRecord"]

R = TypeVar("R", bound=BaseModel)
D = TypeVar("D", bound=AnalysisDoc)


class Store:
    """A folder of artifacts (``output/store``) with typed, atomic reads and writes.

    Args:
        root: the store folder; created on first write.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- paths -----------------------------------------------------------------------------------
    def dataset_dir(self, dataset: str) -> Path:
        return self.root / "datasets" / dataset

    def network_dir(self, network: str) -> Path:
        return self.root / "networks" / network

    def checkpoint_dir(self, network: str, checkpoint: str) -> Path:
        return self.network_dir(network) / checkpoint

    def image_path(self, dataset: str, index: int) -> Path:
        """Where probe image ``index`` of ``dataset`` is (or will be) stored as PNG."""
        return self.dataset_dir(dataset) / "images" / f"{index}.png"

    def sprite_path(self, network: str, checkpoint: str, layer: str, unit: int) -> Path:
        return self.checkpoint_dir(network, checkpoint) / "units" / layer / f"unit-{unit:04d}.webp"

    # --- records ---------------------------------------------------------------------------------
    def write_build(self, rec: BuildRecord) -> None:
        with _writing(self.root / "build.json"):
            codecs.write_json(self.root / "build.json", rec.model_dump(mode="json"))

    def read_build(self) -> BuildRecord:
        path = self.root / "build.json"
        if not path.is_file():
            raise StoreError(
                f"{self.root}: no finished build here (build.json missing); run `sitegen build` first"
            )
        return self._read(path, BuildRecord)

    def write_dataset(self, rec: DatasetRecord) -> None:
        path = self.dataset_dir(rec.name) / "dataset.json"
        with _writing(path):
            codecs.write_json(path, rec.model_dump(mode="json"))

    def read_dataset(self, dataset: str) -> DatasetRecord:
        return self._read(self.dataset_dir(dataset) / "dataset.json", DatasetRecord)

    def write_network(self, rec: NetworkRecord) -> None:
        path = self.network_dir(rec.name) / "network.json"
        with _writing(path):
            codecs.write_json(path, rec.model_dump(mode="json"))

    def read_network(self, network: str) -> NetworkRecord:
        return self._read(self.network_dir(network) / "network.json", NetworkRecord)

    def write_manifest(self, m: CheckpointManifest) -> None:
        """Write a checkpoint's manifest: call it LAST, after every file of the entry is written."""
        path = self.checkpoint_dir(m.network, m.checkpoint) / "manifest.json"
        with _writing(path):
            codecs.write_json(path, m.model_dump(mode="json"))

    def read_manifest(self, network: str, checkpoint: str) -> CheckpointManifest:
        return self._read(self.checkpoint_dir(network, checkpoint) / "manifest.json", CheckpointManifest)

    def cached(self, network: str, checkpoint: str, key: str) -> bool:
        """True when the entry is complete and was computed from the same inputs (same key)."""
        path = self.checkpoint_dir(network, checkpoint) / "manifest.json"
        if not path.is_file():
            return False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return data.get("format") == FORMAT and data.get("key") == key

    # --- analysis documents (sitegen.store.formats) ---------------------------------------------------
    def analysis_path(self, network: str, checkpoint: str, kind: str) -> Path:
        return self.checkpoint_dir(network, checkpoint) / f"{kind}.json"

    def write_analysis(self, network: str, checkpoint: str, doc: AnalysisDoc) -> None:
        """Write one analysis document (``<kind>.json``; its images are already in the folder)."""
        self.write_json(self.analysis_path(network, checkpoint, doc.KIND), doc.model_dump(mode="json"))

    def read_analysis(self, network: str, checkpoint: str, model: type[D]) -> D:
        """Read and validate one analysis document: any problem is a one-line StoreError."""
        return read_analysis(self.analysis_path(network, checkpoint, model.KIND), model)

    # --- arrays and images -----------------------------------------------------------------------
    def write_arrays(self, network: str, checkpoint: str, name: str, arrays: dict[str, np.ndarray]) -> None:
        path = self.checkpoint_dir(network, checkpoint) / f"{name}.npz"
        with _writing(path):
            codecs.write_npz(path, arrays)

    def read_arrays(self, network: str, checkpoint: str, name: str) -> dict[str, np.ndarray]:
        path = self.checkpoint_dir(network, checkpoint) / f"{name}.npz"
        if not path.is_file():
            raise StoreError(f"{path}: missing; the store is incomplete, rerun `sitegen build`")
        return codecs.read_npz(path)

    def write_png(self, path: Path, image: np.ndarray) -> None:
        with _writing(path):
            codecs.write_png(path, image)

    def write_sprite(self, network: str, checkpoint: str, layer: str, unit: int, image: np.ndarray) -> None:
        """A unit's sprite (lossy WebP: see :func:`codecs.encode_webp`)."""
        path = self.sprite_path(network, checkpoint, layer, unit)
        with _writing(path):
            codecs.write_webp(path, image)

    def write_json(self, path: Path, obj: object) -> None:
        with _writing(path):
            codecs.write_json(path, obj)

    def check_writable(self) -> None:
        """Fail now, not after training, when the store cannot be written (nothing is created).

        Writes and removes a probe file, through the same atomic write as every artifact, in the
        store folder or its nearest existing parent. Trying is the only test that holds for root,
        ACLs, read-only mounts and full disks (``os.access`` says yes to root on a read-only folder).

        Raises:
            StoreError: naming the folder and why (permission denied, read-only, no space left, ...).
        """
        folder = next((p for p in (self.root, *self.root.parents) if p.exists()), self.root)
        probe = folder / f".sitegen-write-test-{os.getpid()}"
        with _writing(folder):
            codecs.write_bytes(probe, b"")
            probe.unlink()

    def read_json(self, path: Path) -> object:
        return codecs.read_json(path)

    # --- internals -------------------------------------------------------------------------------
    def _read(self, path: Path, model: type[R]) -> R:
        data = _document(path, FORMAT, "store format")
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise StoreError(f"{path}: not a valid {model.__name__}: {e.errors()[0]['msg']}") from None


def read_analysis(path: Path, model: type[D]) -> D:
    """An analysis document at ``path``, validated against ``model`` (one-line StoreError otherwise)."""
    data = _document(path, ANALYSIS_FORMAT, "format")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "document"
        raise StoreError(
            f"{path}: malformed ({where}: {err['msg']}; {e.error_count()} problem(s)); rerun `sitegen build`"
        ) from None


def _document(path: Path, expected: int, what: str) -> Any:
    """The JSON at ``path`` when it carries ``"format": expected``; a one-line StoreError otherwise."""
    if not path.is_file():
        raise StoreError(f"{path}: missing; the store is incomplete, rerun `sitegen build`")
    try:
        data = codecs.read_json(path)
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: unreadable ({e}); delete it and rerun `sitegen build`") from None
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != expected:
        newer = isinstance(fmt, int) and fmt > expected
        hint = "upgrade sitegen" if newer else "rerun `sitegen build` to rewrite it"
        raise StoreError(f"{path}: {what} {fmt!r}, this sitegen reads format {expected}; {hint}")
    return data


_WRITE_HINTS = {
    errno.ENOSPC: "no space left on the device; free some space and rerun (finished entries are kept)",
    errno.EDQUOT: "disk quota exceeded; free some space and rerun (finished entries are kept)",
    errno.EROFS: "read-only file system; point output: at a writable folder",
    errno.EACCES: "permission denied; point output: at a folder you can write, or fix its permissions",
    errno.EPERM: "operation not permitted; point output: at a folder you can write",
}


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while writing ``path`` (full disk, read-only folder) is a StoreError naming it.

    The atomic write leaves the previous file in place, so a failed build loses nothing already built.
    """
    try:
        yield
    except OSError as e:
        hint = _WRITE_HINTS.get(e.errno or 0) or (e.strerror or type(e).__name__)
        raise StoreError(f"{path}: cannot write: {hint}") from e
