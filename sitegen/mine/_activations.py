"""Streaming every unit's maximum on every probe image into a float16 ``.npy`` (``mine(activations=)``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sitegen import _distributed
from sitegen.mine._table import _Table

#: float16's largest finite value: per-image maxima are clipped to +-F16_MAX before storing.
F16_MAX = 65504.0


def _open_activations(path: Path, n: int, table: _Table, rank: int, world: int) -> _RowWriter:
    """Rank 0 creates the ``[n, rows]`` float16 file; then every rank opens it to write its rows."""
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # never write through a hard link (a site may share the file)
        shape = (n, int(table.values.shape[0]))
        created = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        created.flush()
        del created  # only the header and the file's size: rows are written with pwrite below
    _distributed.barrier()
    return _RowWriter(path)


class _RowWriter:
    """Rows of a float16 ``.npy`` written with ``pwrite``.

    Writing through a memory map keeps every written page in the process's RSS until the map goes
    (10,000 alexnet images: +193 MB, issue 13's "RSS flat in the probe set"); written with pwrite they
    sit in the kernel's page cache only. Each batch's rows are consecutive: one write per batch.
    """

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _fortran, dtype = read(f)
            self.offset = f.tell()
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        self._fd = os.open(path, os.O_WRONLY)

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=np.float16).tobytes()
        os.pwrite(self._fd, data, self.offset + int(rows.start) * self.row_bytes)

    def flush(self) -> None:
        os.close(self._fd)
