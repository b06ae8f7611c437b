"""Per-unit filter weights, for comparing checkpoints (cosine similarity in ``sitegen diff``).

A layer's units are the output channels of the module that produces it: the conv (or linear)
right before the layer's ReLU, or the layer's own module when it is a conv/linear. Stored
float16, flattened per unit; layers bigger than ``max_elements`` (VGG's 100M-weight fc6) are left
out rather than bloating the store: the diff then omits the cosine column for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from sitegen.models import LayerInfo

MAX_ELEMENTS = 4_000_000


def unit_weights(
    module: nn.Module, layers: Sequence[LayerInfo], *, max_elements: int = MAX_ELEMENTS
) -> dict[str, np.ndarray]:
    """Flattened weights of each conv/linear layer's producing module, ``float16 [units, fan_in]``.

    Args:
        module: the network.
        layers: its layer table; ``prob`` and block layers (no single producing module) are skipped.
        max_elements: skip layers with more weights than this.

    Returns:
        ``{layer name: weights}`` for the layers that have a producing module of matching width.
    """
    order = list(module.named_modules())
    position = {path: i for i, (path, _) in enumerate(order)}
    out: dict[str, np.ndarray] = {}
    for info in layers:
        if info.kind not in ("conv", "linear") or info.module not in position:
            continue
        producer = _producer(order, position[info.module], info.units)
        if producer is None or producer.weight.numel() > max_elements:
            continue
        w = producer.weight.detach().float().cpu().reshape(info.units, -1)
        out[info.name] = w.numpy().astype(np.float16)
    return out


def _producer(order: list[tuple[str, nn.Module]], end: int, units: int) -> nn.Conv2d | nn.Linear | None:
    """The last conv/linear at or before ``end`` in module order, if its output width is ``units``."""
    for _, m in reversed(order[: end + 1]):
        if isinstance(m, nn.Conv2d | nn.Linear):
            width = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            return m if width == units else None
    return None
