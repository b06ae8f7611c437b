"""Files of a checkpoint entry that are not arrays or analysis documents: activation maps and the
per-image activations (moved in from ``partial/``, with their offsets in ``activations.json``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sitegen.mine import Mined
from sitegen.store import Store, codecs
from sitegen.store.activations import ACTIVATIONS, ACTIVATIONS_JSON

log = logging.getLogger("sitegen")


def _keep_activations(ck_dir: Path, mined: Mined, label: str) -> None:
    """Move ``partial/activations.npy`` into the entry, beside ``activations.json`` (offsets)."""
    (ck_dir / ACTIVATIONS_JSON).unlink(missing_ok=True)
    if mined.activations is None:
        (ck_dir / ACTIVATIONS).unlink(missing_ok=True)
        return
    dest = ck_dir / ACTIVATIONS
    if mined.activations.path != dest:
        dest.unlink(missing_ok=True)  # a site may hard-link the old file: never write through it
        mined.activations.path.replace(dest)
    n = len(mined.labels)
    shape = [n, mined.activations.columns]
    doc = {"format": 1, **mined.activations.to_json(), "dtype": "float16", "shape": shape}
    codecs.write_json(ck_dir / ACTIVATIONS_JSON, doc)
    log.info(
        "%s: per-image activations %s: %d images x %d units, %.1f MB",
        label,
        ACTIVATIONS,
        n,
        mined.activations.columns,
        dest.stat().st_size / 1e6,
    )


def _write_actmaps(store: Store, ck_dir: Path, maps) -> None:
    doc: dict[str, Any] = {"format": 1, "images": []}
    for item in maps.images:
        layers = []
        for lay in item.layers:
            chans = []
            for ch in lay.channels:
                name = f"actmaps/{item.index}-{lay.layer}-{ch.channel}.png"
                store.write_png(ck_dir / name, ch.overlay)
                chans.append({"channel": ch.channel, "norm": ch.norm, "png": name})
            layers.append({"layer": lay.layer, "channels": chans})
        doc["images"].append(
            {
                "index": item.index,
                "label": item.label,
                "top5": [[c, p] for c, p in item.top5],
                "layers": layers,
            }
        )
    store.write_json(ck_dir / "actmaps.json", doc)
