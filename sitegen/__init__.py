"""sitegen: one YAML spec in, a browsable static atlas of what CNN units learned out.

The public entry points are imported lazily so that ``import sitegen`` (and
``sitegen render``) never pulls in torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "load_spec",
    "build",
    "render_site",
    "receptive_fields",
    "class_histograms",
    "reconstruct",
    "gradcam",
]

_LAZY = {
    "load_spec": "sitegen.spec",
    "build": "sitegen.build",
    "render_site": "sitegen.render",
    "receptive_fields": "sitegen.receptive_field",
    "class_histograms": "sitegen.analyses.class_hist",
    "reconstruct": "sitegen.analyses.reconstruct",
    "gradcam": "sitegen.analyses.gradcam",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sitegen' has no attribute {name!r}")
