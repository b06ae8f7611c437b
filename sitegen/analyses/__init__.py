"""Analyses: pure functions from mined results (and the model) to numpy results for the store.

One module per technique (``class_hist``: rank-weighted class histograms, ...). The registry of
analysis kinds (kind -> params model and ``run``) is added here by the build stage's owner.
"""

from __future__ import annotations

__all__: list[str] = []
