"""The registered analyses of one checkpoint (issue 12): their Context, run in registry order, stored.

Used for a freshly mined entry and for a cached one whose analyses changed (:mod:`.refresh`); each
document is keyed by :func:`sitegen.build.keys._analysis_key`.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sitegen._memory import release_free_memory
from sitegen.analyses import registry
from sitegen.analyses.registry import Context
from sitegen.build.dataset import _ImageCache
from sitegen.build.keys import _analysis_key
from sitegen.build.sprites import Progress
from sitegen.data import DataBundle
from sitegen.mine import Mined
from sitegen.models import LoadedModel
from sitegen.spec import Spec
from sitegen.store import Store
from sitegen.store.manifest import CheckpointManifest


def _context(
    spec: Spec,
    net_name: str,
    label: str,
    loaded: LoadedModel,
    bundle: DataBundle,
    image_cache: _ImageCache,
    device: torch.device,
    report: Progress,
    *,
    labels: np.ndarray,
    shown: dict[str, list[int]],
    weighted: dict[str, np.ndarray],
) -> Context:
    """What every analysis of the checkpoint ``label`` gets; its progress goes to ``report``."""
    return Context(
        loaded=loaded,
        network=net_name,
        image=image_cache.tensor,
        picture=image_cache.uint8,
        class_names=bundle.class_names,
        labels=labels,
        shown=shown,
        weighted=weighted,
        device=device,
        seed=spec.seed,
        problem=spec.problem,
        progress=lambda what, d, n: report(f"{what} {label}", d, n),
    )


def _run_analyses(
    spec: Spec,
    store: Store,
    ck_name: str,
    ctx: Context,
    mined: Mined,
    entry_key: str,
    timings: dict[str, float],
    images: set[int],
    *,
    current: CheckpointManifest | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Run every enabled analysis in registry order and store its document.

    ``current``: a cached entry's manifest: analyses whose key it holds are kept, not rerun. Adds the
    probe images the documents show to ``images`` and each run's seconds to ``timings``.

    Returns:
        The kinds written (``manifest.techniques``) and every enabled kind's key (a kind that had
        nothing to show, e.g. Grad-CAM on a net without conv layers, is keyed but not listed).
    """
    done: list[str] = []
    keys: dict[str, str] = {}
    out = store.checkpoint_dir(ctx.network, ck_name)
    for kind in registry.enabled(spec.analyses):
        key = keys[kind.name] = _analysis_key(entry_key, spec, kind)
        if current is not None and current.analysis_keys.get(kind.name) == key:
            if kind.name in current.techniques:
                done.append(kind.name)
            if kind.name in current.timings:
                timings[kind.name] = current.timings[kind.name]
            continue
        module = kind.analysis()
        t = time.perf_counter()
        result = module.run(ctx, mined, kind.settings(spec.analyses))
        if result is not None:
            doc = module.save(ctx, result, out)
            store.write_analysis(ctx.network, ck_name, doc)
            images.update(doc.probe_images())
            done.append(kind.name)
        timings[kind.name] = time.perf_counter() - t
        release_free_memory()  # each analysis's freed buffers, before the next one's peak
    return done, keys
