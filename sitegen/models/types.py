"""Hand-off types of the models stage: the layer table and a loaded model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """One mappable layer of a network.

    Attributes:
        name: friendly name from the literature (``conv1``, ``conv3_2``, ``fc6``, ``prob``, ``layer2``).
        module: ``named_modules()`` path whose output is this layer (``""`` for ``prob``, the softmax
            of the model output).
        kind: ``"conv"``, ``"linear"``, ``"prob"``, ``"block"`` or ``"pool"``.
        shape: output shape without the batch axis: ``(C, H, W)`` or ``(D,)``.
        units: channels (conv) or neurons (linear, prob).
        rf_size: receptive-field side in input pixels (the whole input for linear/prob layers).
        rf_stride: input pixels between neighbouring units (the "jump").
        rf_offset: input coordinate of the centre of unit (0, 0); unit (row, col) is centred at
            ``(rf_offset + row * rf_stride, rf_offset + col * rf_stride)``.
    """

    name: str
    module: str
    kind: str
    shape: tuple[int, ...]
    units: int
    rf_size: int
    rf_stride: int
    rf_offset: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (``sitegen layers --json``, the store)."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for analysis: eval mode, weights loaded, layer table resolved.

    Images fed to the stages are un-normalized [0, 1]; call :meth:`normalize` on the device first.
    """

    module: nn.Module
    arch: str
    num_classes: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    layers: tuple[LayerInfo, ...]
    params: int
    normalization: str = "dataset"
    extra: dict[str, Any] = field(default_factory=dict)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel, on x's device and dtype."""
        mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
        std = x.new_tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std

    def layer(self, name_or_module: str) -> LayerInfo:
        """Find a layer by friendly name or module path."""
        for info in self.layers:
            if name_or_module in (info.name, info.module):
                return info
        raise KeyError(name_or_module)
