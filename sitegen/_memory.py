"""Give freed heap memory back to the operating system between the build's stages (glibc only).

Why (issue 13, item 3: peak RSS under 2 GB at seed scale): torch and numpy free their buffers with
``free``, and glibc keeps the freed pages of its heaps for reuse. The reconstructions of a layer and
each analysis allocate and free hundreds of MB in blocks of every size; what they leave behind is
free but still resident, so the process's RSS crept up stage after stage (alexnet, 160 classes,
3,040 probe images: 1.47 GB before the analyses, 1.80 GB after, with 281 MB of live arrays) and each
stage's transient landed on top of it. ``malloc_trim(0)`` returns every whole free page of every
arena; called between stages it took the analyses' peak from 1.98 to 1.83 GB with no change in the
build's time beyond run-to-run noise. A fixed ``M_MMAP_THRESHOLD`` (every big block its own
mapping) cut the peak further but tripled the kernel time (10 s to 39 s): each fresh mapping
page-faults on first touch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _trim() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # absent from musl
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Return the heap's free pages to the OS (``malloc_trim(0)``); a no-op off glibc."""
    trim = _trim()
    if trim is not None:
        trim(0)  # type: ignore[operator]
