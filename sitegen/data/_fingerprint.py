"""The dataset fingerprint: SHA-256 of the source, split parameters and per-image file stats."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from sitegen.data.images import FORMAT
from sitegen.spec import DatasetSpec


def _split_params(ds: DatasetSpec) -> dict[str, Any]:
    return {"format": FORMAT, "image_size": ds.image_size, "max_per_class": ds.max_per_class,
            "probe_fraction": ds.probe_fraction}


def _file_stats(root: Path, items: list[tuple[str, int]]) -> list[tuple[str, int, int, int]]:
    out = []
    for rel, label in items:
        st = (root / rel).stat()
        out.append((rel, st.st_size, st.st_mtime_ns, label))
    return out


def _fingerprint(content: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
