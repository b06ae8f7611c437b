"""The on-disk cache of decoded images: one file of uint8 slots per split, named by fingerprint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sitegen.data.images import FORMAT


class DiskCache:
    """Decoded uint8 images ``[N, 3, H, W]`` in one file, filled on first access, read back with pread.

    Why: holding a probe set decoded in RAM grows with it (3,040 images at 224 px: 460 MB; 10,000:
    1.5 GB), and decoding PNGs on every access caps mining and reconstructions (issue 13). Here each
    image is decoded once, written to its slot, and then read from the page cache, which the kernel
    may drop: the process's RSS stays flat in the probe set. A one-byte-per-image fill map, written
    after the slot, says which slots hold pixels, so a killed build, DataLoader workers and torchrun
    ranks (separate processes writing disjoint slots) all leave a consistent cache. The file name
    carries the dataset fingerprint: changed files get a new cache (older ones are removed).
    """

    def __init__(self, path: Path, count: int, image_size: int) -> None:
        self.path = path
        self.count = count
        self.shape = (3, image_size, image_size)
        self.nbytes = 3 * image_size * image_size
        self._fds: tuple[int, int, int] | None = None  # (pid, data fd, fill-map fd), per process
        fill = self._fill_path
        if not (path.is_file() and fill.is_file() and path.stat().st_size == count * self.nbytes):
            path.parent.mkdir(parents=True, exist_ok=True)
            for f, size in ((path, count * self.nbytes), (fill, count)):
                with open(f, "wb") as fh:
                    fh.truncate(size)  # sparse: disk is used as slots fill

    @property
    def _fill_path(self) -> Path:
        return self.path.with_suffix(".filled")

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers open their own descriptors
        return {**self.__dict__, "_fds": None}

    def _open(self) -> tuple[int, int]:
        if self._fds is None or self._fds[0] != os.getpid():
            self._fds = (os.getpid(), os.open(self.path, os.O_RDWR), os.open(self._fill_path, os.O_RDWR))
        return self._fds[1], self._fds[2]

    def get(self, index: int, load: Any) -> np.ndarray:
        """Image ``index`` as uint8 ``[3, H, W]``; ``load()`` decodes it (``[H, W, 3]``) when not cached."""
        data, fill = self._open()
        if os.pread(fill, 1, index) == b"\x01":
            buf = os.pread(data, self.nbytes, index * self.nbytes)
            if len(buf) == self.nbytes:
                return np.frombuffer(bytearray(buf), dtype=np.uint8).reshape(self.shape)
        chw = np.ascontiguousarray(np.asarray(load(), dtype=np.uint8).transpose(2, 0, 1))
        os.pwrite(data, chw.tobytes(), index * self.nbytes)
        os.pwrite(fill, b"\x01", index)
        return chw


def _disk_cache(cache_dir: Path | None, name: str, split: str, fingerprint: str, count: int, size: int):
    if cache_dir is None:
        return None
    stem = f"{_safe_name(name)}-{split}-"
    path = cache_dir / f"{stem}{fingerprint}-{size}px-v{FORMAT}.u8"
    if cache_dir.is_dir():
        for old in cache_dir.glob(f"{stem}*"):
            if old.stem != path.stem:
                old.unlink(missing_ok=True)
    return DiskCache(path, count, size)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
