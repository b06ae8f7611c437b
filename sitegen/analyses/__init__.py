"""Analyses: pure functions from mined results (and the model) to numpy results for the store.

One module per technique (``class_hist``: rank-weighted class histograms, ...). The literature's
techniques are registered analysis kinds (:mod:`sitegen.analyses.registry`: kind -> params,
``run``, store document, render section; docs/INTERNALS.md, "The analysis contract").
"""

from __future__ import annotations

__all__: list[str] = []
