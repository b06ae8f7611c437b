"""Cache keys: what a checkpoint's store entry and each of its analysis documents depend on.

A checkpoint entry is keyed by a content hash of its inputs (:func:`_entry_key`), the registered
analyses' sections left out: each analysis document has its own key (:func:`_analysis_key`), so a
rebuild reruns only the analyses whose params changed (issue 12; :func:`_stale_analyses`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sitegen import __version__
from sitegen.analyses import registry
from sitegen.build.names import _Checkpoint
from sitegen.models import file_hash
from sitegen.spec import ReconstructionSpec, Spec
from sitegen.store.manifest import CheckpointManifest

_DEFAULT_CELL = ReconstructionSpec.model_fields["cell"].default


def _checkpoint_hash(spec: Spec, ck: _Checkpoint) -> str:
    """The checkpoint file's content hash; a weights name or random init is named (with the seed)."""
    if ck.source and Path(ck.source).is_file():
        return file_hash(Path(ck.source))
    return f"{ck.source or 'init'}:{spec.seed}"


def _entry_key(
    spec: Spec, net_name: str, source: str, fingerprint: str, mean: tuple, std: tuple, *, atlas: bool = True
) -> str:
    """Content hash of everything a checkpoint's store entry depends on (``source``: the checkpoint's).

    The registered analyses' sections are left out: each analysis document has its own key
    (:func:`_analysis_key`), so changing ``analyses.featvis.steps`` recomputes featvis only (issue 12).
    """
    shared = spec.analyses.model_dump(mode="json", exclude=registry.technique_fields())
    if shared.get("reconstructions", {}).get("cell") == _DEFAULT_CELL:  # stores from before the setting
        del shared["reconstructions"]["cell"]  # existed keep their key
    blob = json.dumps(
        {
            "network": spec.section_hash("networks", net_name),
            "analyses": hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16],
            "checkpoint": source,
            "data": fingerprint,
            "mean": list(mean),
            "std": list(std),
            "seed": spec.seed,
            "sitegen": __version__,
            "atlas": atlas,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _analysis_key(entry_key: str, spec: Spec, kind: registry.Kind) -> str:
    """One analysis document's cache key: its checkpoint entry's inputs plus its own params."""
    params = spec.section_hash("analyses", kind.field)
    blob = json.dumps({"entry": entry_key, "kind": kind.name, "params": params})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _stale_analyses(spec: Spec, manifest: CheckpointManifest) -> list[str]:
    """Kinds whose stored state is not the spec's: enabled ones whose document (or recorded skip) is
    from other params, and ones the manifest holds that are no longer enabled (to drop)."""
    keys = manifest.analysis_keys
    kinds = registry.enabled(spec.analyses)
    stale = [k.name for k in kinds if keys.get(k.name) != _analysis_key(manifest.key, spec, k)]
    on = {k.name for k in kinds}
    return stale + sorted({*keys, *manifest.techniques} - on)
