"""Mining one checkpoint entry's probe set, or reloading what a killed build of it mined.

The build's only caller of :func:`sitegen.mine.mine`: the one pass over the probe set (top-k tables,
predictions, optional features and per-image activations), and the features alone for a refreshed
embedding.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from sitegen._distributed import rank_world
from sitegen.build.resume import _Resume
from sitegen.build.sprites import Progress
from sitegen.data import DataBundle
from sitegen.mine import Mined, mine
from sitegen.models import LoadedModel
from sitegen.spec import Spec
from sitegen.store.activations import ACTIVATIONS

log = logging.getLogger("sitegen")


def _mine_or_resume(
    spec: Spec,
    loaded: LoadedModel,
    bundle: DataBundle,
    device: torch.device,
    resume: _Resume,
    report: Progress,
    label: str,
    *,
    lead: bool,
    features: bool,
) -> Mined:
    """The probe set mined (kept in ``partial/`` by rank 0), or a killed build's saved tables.

    ``features``: also the penultimate features the embedding needs (checkpoints with pages).
    """
    a = spec.analyses
    # per-image activations (issue 15): mined into partial/, moved into the entry with the manifest
    acts_path = resume.root / ACTIVATIONS if a.activations.enabled else None
    mined = resume.mined(activations=acts_path is not None) if lead and rank_world()[1] == 1 else None
    if mined is None:
        mined = mine(
            loaded,
            bundle.probe,
            k=a.top_k,
            batch_size=a.batch_size,
            device=str(device),
            num_workers=a.num_workers,
            autocast=a.autocast,
            features=features and a.embedding.enabled and _has_linear(loaded),
            progress=lambda d, n: report(f"mine {label}", d, n),
            activations=acts_path,
        )
        if lead:
            resume.save_mined(mined)
    else:
        log.info("%s: resuming (mined results and %d finished layer(s) kept)", label, resume.done_layers)
    return mined


def _mine_features(
    loaded: LoadedModel, bundle: DataBundle, spec: Spec, device: torch.device
) -> np.ndarray | None:
    """The penultimate features of the probe set alone (they are not stored): a refreshed embedding."""
    a = spec.analyses
    return mine(
        loaded, bundle.probe, k=1, batch_size=a.batch_size, device=str(device), features=True
    ).features


def _has_linear(loaded: LoadedModel) -> bool:
    return any(isinstance(m, torch.nn.Linear) for m in loaded.module.modules())
