"""The models stage: build a network, load its weights, and resolve its layer table.

``load_model(net_spec, ...) -> LoadedModel`` is the stage entry; the other names are its parts, for
the CLI (``sitegen layers``), spec checks (``check_arch``) and cache keys (``file_hash``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sitegen.models._registry import build_model, check_arch, list_archs
from sitegen.models.checkpoint import check_weights, file_hash, load_weights, weights_meta
from sitegen.models.layers import layer_table
from sitegen.models.types import LayerInfo, LoadedModel

if TYPE_CHECKING:
    from sitegen.spec import NetworkSpec

__all__ = [
    "load_model",
    "build_model",
    "load_weights",
    "layer_table",
    "list_archs",
    "check_arch",
    "check_weights",
    "file_hash",
    "weights_meta",
    "LayerInfo",
    "LoadedModel",
]


def load_model(
    net: NetworkSpec,
    *,
    num_classes: int,
    input_size: int,
    checkpoint: str | Path | None = None,
    mean: Sequence[float],
    std: Sequence[float],
    normalization: str = "dataset",
) -> LoadedModel:
    """Build ``net.arch``, load its weights, switch to eval mode and resolve ``net.layers``.

    Args:
        net: the network's spec section.
        num_classes: classes of its dataset; a head of another size is replaced (fine-tuning).
        input_size: side of the square input in pixels (shapes and receptive fields depend on it).
        checkpoint: a local checkpoint to load instead of ``net.weights`` (one of ``net.checkpoints``,
            or a training epoch); ``None`` loads ``net.weights``, or keeps random weights without them.
        mean: per-channel normalization mean, resolved by the caller (see :func:`weights_meta`).
        std: per-channel normalization std.
        normalization: what ``mean``/``std`` are (``"imagenet"``, ``"dataset"``, ...), for the record.

    Returns:
        The :class:`LoadedModel` (on the CPU; the caller moves ``module`` to its device).

    Raises:
        ModelError: unknown architecture or layer, unreadable or mismatched weights.

    Example:
        >>> lm = load_model(spec.networks["alexnet"], num_classes=20, input_size=64,  # doctest: +SKIP
        ...                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        >>> [l.name for l in lm.layers][:2]  # doctest: +SKIP
        ['conv1', 'conv2']
    """
    module = build_model(net.arch, num_classes, input_size=input_size)
    source = checkpoint if checkpoint is not None else net.weights
    if source is not None:
        load_weights(module, str(source), arch=net.arch)
    module.eval()
    layers = layer_table(module, input_size, net.layers)
    return LoadedModel(
        module=module,
        arch=net.arch,
        num_classes=num_classes,
        input_size=input_size,
        mean=(float(mean[0]), float(mean[1]), float(mean[2])),
        std=(float(std[0]), float(std[1]), float(std[2])),
        layers=layers,
        params=sum(p.numel() for p in module.parameters()),
        normalization=normalization,
        extra={"weights": str(source) if source is not None else None},
    )
