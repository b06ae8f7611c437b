"""Resuming inside a checkpoint entry: what a killed build already finished (``partial/``).

Also the one spelling of a layer's mined top-k tables as store arrays (``<layer>/values`` ...) and
back, shared by the entry's ``mined.npz``, the resume state and a refresh of its analyses.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sitegen.mine import LayerTopK, Mined
from sitegen.store import codecs
from sitegen.store.activations import Activations
from sitegen.store.manifest import SpriteLayout

TOPK_FIELDS = ("values", "images", "rows", "cols")


def _topk_arrays(topk: LayerTopK, prefix: str) -> dict[str, np.ndarray]:
    """``{"<prefix>/values": ..., "<prefix>/images": ..., ...}``: one layer's tables as store arrays."""
    return {f"{prefix}/{f}": getattr(topk, f) for f in TOPK_FIELDS}


def _topk_layers(
    arrays: dict[str, np.ndarray], names: Iterable[str], prefix: str = ""
) -> dict[str, LayerTopK]:
    """The layers ``names`` read back from arrays written by :func:`_topk_arrays` (``prefix + name``)."""
    return {n: LayerTopK(**{f: arrays[f"{prefix}{n}/{f}"] for f in TOPK_FIELDS}) for n in names}


class _Resume:
    """What a killed build of one checkpoint entry already finished, so a rerun resumes there.

    The mined tables are kept after the single pass, and each layer's sprites are vouched for by a
    marker written once all of them are (``partial/<layer>.json``), all under the entry's cache key.
    A rerun with the same key reloads the mined tables instead of mining again (mining is
    deterministic: same images, same model, same batches) and skips finished layers; a different key
    ignores and replaces them. The folder goes when the manifest is written (issue 13, item 7).
    """

    def __init__(self, root: Path, key: str) -> None:
        self.root = root
        self.key = key
        self.done_layers = 0

    def _fresh(self, path: Path) -> dict | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and doc.get("key") == self.key else None

    def mined(self, *, activations: bool = False) -> Mined | None:
        """The mined tables a killed build of this entry saved, or None (also when ``activations``
        are wanted and the saved pass wrote none)."""
        doc = self._fresh(self.root / "mined.json")
        if doc is None:
            return None
        acts = None
        if activations:
            try:
                acts = Activations.from_json(self.root, doc["activations"])
                ok = np.load(acts.path, mmap_mode="r").shape[1] == acts.columns
            except (OSError, ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                return None
        try:
            arrays = codecs.read_npz(self.root / "mined.npz")
        except (OSError, ValueError):
            return None
        self.done_layers = len(list(self.root.glob("layer-*.json")))
        prefix = "layer:"
        names = dict.fromkeys(k.rsplit("/", 1)[0][len(prefix) :] for k in arrays if k.startswith(prefix))
        return Mined(
            layers=_topk_layers(arrays, names, prefix),
            labels=arrays["labels"],
            top5=arrays["top5"],
            top5_prob=arrays["top5_prob"],
            features=arrays.get("features"),
            activations=acts,
        )

    def save_mined(self, mined: Mined) -> None:
        arrays = {"labels": mined.labels, "top5": mined.top5, "top5_prob": mined.top5_prob}
        if mined.features is not None:
            arrays["features"] = mined.features
        for name, topk in mined.layers.items():
            arrays |= _topk_arrays(topk, f"layer:{name}")
        codecs.write_npz(self.root / "mined.npz", arrays)
        doc: dict = {"key": self.key}
        if mined.activations is not None:
            doc["activations"] = mined.activations.to_json()
        codecs.write_json(self.root / "mined.json", doc)

    def layer(self, name: str, units: list[int]) -> tuple[bool, SpriteLayout | None]:
        """Whether a layer's sprites are all written, and their layout (None: the layer has none)."""
        doc = self._fresh(self.root / f"layer-{_safe(name)}.json")
        if doc is None or doc.get("units") != units:
            return False, None
        return True, None if doc["layout"] is None else SpriteLayout(**doc["layout"])

    def finish_layer(self, name: str, units: list[int], layout: SpriteLayout | None) -> None:
        doc = {"key": self.key, "units": units, "layout": layout and layout.model_dump(mode="json")}
        codecs.write_json(self.root / f"layer-{_safe(name)}.json", doc)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
