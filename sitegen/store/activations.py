"""The per-image activations of a checkpoint entry (issue 15): torch-free, for build, diff and compare.

Mining (:func:`sitegen.mine.mine`) writes every unit's maximum on every probe image as a float16
``.npy`` ``[N, total units]`` (``activations.npy``), layers side by side in layer-table order, and
the entry keeps ``activations.json`` (``{"format", "file", "offsets", "units", "dtype", "shape"}``).
:class:`Activations` says where a layer's columns lie; :class:`LayerColumns` reads blocks of them
with ``pread`` (never a memory map: see its docstring). Readers index ``[:, a:b]`` only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sitegen.store import codecs

__all__ = ["ACTIVATIONS", "ACTIVATIONS_JSON", "Activations", "LayerColumns", "stored_activations"]

#: The file names in a checkpoint entry.
ACTIVATIONS = "activations.npy"
ACTIVATIONS_JSON = "activations.json"


def _header(path: Path) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, data offset)`` of a ``.npy`` file."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
        return tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype), f.tell()


@dataclass(frozen=True, slots=True)
class Activations:
    """Where the per-image maxima of every unit lie: a float16 ``.npy`` ``[N, total units]``.

    Attributes:
        path: the ``.npy`` file (read it memory-mapped: :meth:`open`).
        offsets: layer -> its first column, in layer-table order.
        units: layer -> its number of columns.
    """

    path: Path
    offsets: dict[str, int]
    units: dict[str, int]

    @property
    def columns(self) -> int:
        """Total units (columns) over all layers."""
        return sum(self.units.values())

    @property
    def images(self) -> int:
        """Rows: probe images (read from the file's header)."""
        return _header(self.path)[0][0]

    def open(self) -> np.ndarray:
        """The whole array, memory-mapped read-only."""
        return np.load(self.path, mmap_mode="r")

    def layer(self, name: str, array: np.ndarray | None = None) -> np.ndarray | LayerColumns:
        """One layer's ``[N, U]`` columns: a view of ``array``, or (none given) a
        :class:`LayerColumns` that reads blocks of them from the file with ``pread``."""
        start = self.offsets[name]
        if array is None:
            return LayerColumns(self.path, start, self.units[name])
        return array[:, start : start + self.units[name]]

    def to_json(self) -> dict:
        """``{"file", "offsets", "units"}`` (what the store and the resume marker keep)."""
        return {"file": self.path.name, "offsets": dict(self.offsets), "units": dict(self.units)}

    @classmethod
    def from_json(cls, folder: Path, doc: dict) -> Activations:
        offsets = {k: int(v) for k, v in doc["offsets"].items()}
        return cls(folder / doc["file"], offsets, {k: int(v) for k, v in doc["units"].items()})



class LayerColumns:
    """Columns ``[start, start + units)`` of a float16 ``.npy`` ``[N, total]``, read on indexing.

    ``cols[:, a:b]`` returns a float16 ``[N, b - a]`` array read with ``pread`` in chunks of rows, so
    the process holds only what it asked for. A memory map does not: a layer's columns are a few
    bytes of every row, and the kernel maps the pages around each fault (fault-around), so reading
    any layer through a map brings the whole file into the process's RSS (10,000 alexnet images:
    +191 MB; issue 13's "RSS flat in the probe set").
    """

    CHUNK = 8 << 20  # bytes of rows per read

    def __init__(self, path: Path, start: int, units: int) -> None:
        shape, fortran, dtype, self._offset = _header(path)
        if fortran or np.dtype(dtype) != np.float16 or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-ordered float16 [N, units] array, got {dtype} {shape}")
        self.path, self.start, self.total = path, start, int(shape[1])
        self.shape = (int(shape[0]), units)
        self.dtype = np.dtype(np.float16)

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        if rows != slice(None) or cols.step not in (None, 1):
            raise IndexError("LayerColumns supports [:, a:b] only")
        a, b, _ = cols.indices(self.shape[1])
        b = max(a, b)
        n, row_bytes = self.shape[0], self.total * 2
        out = np.empty((n, b - a), dtype=np.float16)
        if b == a or n == 0:
            return out
        step = max(1, self.CHUNK // max(row_bytes, 1))
        with open(self.path, "rb", buffering=0) as f:
            fd = f.fileno()
            for r0 in range(0, n, step):
                r1 = min(n, r0 + step)
                # from row r0's first wanted column to row r1 - 1's last: one read per chunk
                first = self._offset + (r0 * self.total + self.start + a) * 2
                length = ((r1 - r0 - 1) * self.total + (b - a)) * 2
                buf = os.pread(fd, length, first)
                if len(buf) != length:
                    raise OSError(f"{self.path}: short read (file truncated?)")
                flat = np.frombuffer(buf + b"\0" * (self.total * 2 - (b - a) * 2), dtype=np.float16)
                out[r0:r1] = flat.reshape(r1 - r0, self.total)[:, : b - a]
        return out

    def __len__(self) -> int:
        return self.shape[0]


def stored_activations(ck_dir: Path) -> Activations | None:
    """An entry's ``activations.npy`` (None: not written, unreadable, or not matching its offsets)."""
    try:
        acts = Activations.from_json(ck_dir, codecs.read_json(ck_dir / ACTIVATIONS_JSON))
        shape, fortran, dtype, _ = _header(acts.path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if len(shape) != 2 or fortran or dtype != np.float16:
        return None
    return acts if all(acts.offsets[k] + acts.units.get(k, 0) <= shape[1] for k in acts.offsets) else None
