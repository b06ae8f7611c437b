"""Which classes and which images: ``classes:`` applied to what a source has, and the hash-rank split."""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sitegen.errors import DataError
from sitegen.spec import TopClasses

log = logging.getLogger("sitegen.data")  # the package's logger, as before the split


def _select(
    name: str, wanted: Any, counts: Mapping[str, int], where: str, *, canonical: bool = False
) -> list[str]:
    """Apply ``classes:`` to the available classes (``counts``: images per class, in label order).

    ``canonical``: the order of ``counts`` is itself the meaning (doodles), so ``top: N`` takes the
    first N instead of ranking equal counts by name.
    """
    available = list(counts)
    if wanted == "all":
        return available
    if isinstance(wanted, TopClasses):
        if wanted.top > len(available):
            log.warning("dataset %r: classes: top %d asked, but %s has only %d; using all of them",
                        name, wanted.top, where, len(available))
        ranked = available if canonical else sorted(available, key=lambda c: (-counts[c], c))
        keep = set(ranked[: wanted.top])
        return [c for c in available if c in keep]
    wanted = list(wanted)
    if not wanted:
        raise DataError(f"dataset {name!r}: classes: is an empty list; list class names, or use 'all'")
    dupes = sorted({c for c in wanted if wanted.count(c) > 1})
    if dupes:
        listed = ", ".join(map(repr, dupes))
        raise DataError(f"dataset {name!r}: classes: listed twice: {listed}; list each class once")
    unknown = [c for c in wanted if c not in counts]
    if unknown:
        parts = []
        for c in unknown:
            close = difflib.get_close_matches(c, available, n=1)
            parts.append(f"{c!r} (did you mean {close[0]!r}?)" if close else repr(c))
        known = ", ".join(map(repr, available[:10])) + (", …" if len(available) > 10 else "")
        raise DataError(
            f"dataset {name!r}: classes: not found in {where}: {', '.join(parts)}; known classes: {known}"
        )
    return wanted


def _rank(items: Iterable[str], seed: int, cls: str) -> list[str]:
    """Items ordered by a hash of (seed, class, item): a seeded shuffle that is stable per item."""
    return sorted(items, key=lambda item: hashlib.sha256(f"{seed}\0{cls}\0{item}".encode()).digest())


def _probe_count(n: int, fraction: float) -> int:
    """Probe images of a class of ``n``: rounded share, but both splits non-empty when ``n >= 2``."""
    k = int(n * fraction + 0.5)
    return min(max(k, 1), n - 1) if n >= 2 else k
