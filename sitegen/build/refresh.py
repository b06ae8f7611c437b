"""A cached checkpoint entry whose analyses changed: rerun those from the stored mining results.

No mining (but the embedding's features, which are not stored), no patches or reconstructions; the
manifest is rewritten with the new documents' keys (issue 12: per-analysis keys).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from sitegen.analyses import registry
from sitegen.analyses.registry import check_layers
from sitegen.build.dataset import _ImageCache, _write_images
from sitegen.build.keys import _stale_analyses
from sitegen.build.mining import _has_linear, _mine_features
from sitegen.build.names import _Checkpoint
from sitegen.build.resume import _topk_layers
from sitegen.build.sprites import Progress
from sitegen.build.techniques import _context, _run_analyses
from sitegen.data import DataBundle, probe_labels
from sitegen.mine import Mined
from sitegen.models import LoadedModel
from sitegen.spec import Spec
from sitegen.store import Store
from sitegen.store.activations import stored_activations
from sitegen.store.manifest import CheckpointManifest

log = logging.getLogger("sitegen")


def _refresh_analyses(
    spec: Spec,
    store: Store,
    net_name: str,
    ck: _Checkpoint,
    load: Callable[[], LoadedModel],
    bundle: DataBundle,
    device: torch.device,
    manifest: CheckpointManifest,
    report: Progress,
) -> CheckpointManifest:
    """A cached entry whose analyses changed (params, or turned on/off): rerun those analyses only,
    from the stored mining results (no mining, patches or reconstructions), and rewrite the manifest."""
    a = spec.analyses
    label = f"{net_name}@{ck.name}"
    stale = _stale_analyses(spec, manifest)
    log.info("%s: analyses changed: %s", label, ", ".join(sorted(stale)))
    on = {k.name for k in registry.enabled(a)}
    if not on & set(stale):  # only turned off: drop them from the manifest, nothing to compute
        keys = {k: v for k, v in manifest.analysis_keys.items() if k in on}
        updated = manifest.model_copy(
            update={"techniques": [t for t in manifest.techniques if t in on], "analysis_keys": keys}
        )
        store.write_manifest(updated)
        return updated
    loaded = load()
    check_layers(a, loaded.layers, spec.problem, net_name)
    arrays = store.read_arrays(net_name, ck.name, "mined")
    classes = store.read_arrays(net_name, ck.name, "classes")
    features = None
    if "embedding" in stale and "embedding" in on and _has_linear(loaded):  # features are not stored
        features = _mine_features(loaded, bundle, spec, device)
    mined = Mined(
        layers=_topk_layers(arrays, manifest.layers),
        labels=np.asarray(probe_labels(bundle), dtype=np.int64),
        top5=arrays["predictions/top5"],
        top5_prob=arrays["predictions/top5_prob"],
        features=features,
        activations=stored_activations(store.checkpoint_dir(net_name, ck.name)),
    )
    image_cache = _ImageCache(bundle)
    ctx = _context(
        spec,
        net_name,
        label,
        loaded,
        bundle,
        image_cache,
        device,
        report,
        labels=mined.labels,
        shown={lay: list(u) for lay, u in manifest.shown_units.items()},
        weighted={lay: classes[f"{lay}/weighted"] for lay in manifest.layers},
    )
    timings = {k: v for k, v in manifest.timings.items() if k not in registry.REGISTRY}
    images: set[int] = set()
    done, keys = _run_analyses(
        spec, store, ck.name, ctx, mined, manifest.key, timings, images, current=manifest
    )
    _write_images(store, bundle, images)
    updated = manifest.model_copy(
        update={
            "techniques": done,
            "analysis_keys": keys,
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
    )
    store.write_manifest(updated)
    return updated
