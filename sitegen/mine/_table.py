"""The running top-k of every unit, stacked over layers, and each layer's hook that feeds it a batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sitegen.errors import ModelError
from sitegen.mine.results import EMPTY, LayerTopK
from sitegen.models.types import LayerInfo


class _Table:
    """The running top-k of every unit of every layer, stacked: row ``offset + u`` is a layer's unit u.

    All layers see the same images, so their tables have the same width and one merge per batch
    serves them all: a few large tensor ops instead of a dozen small ones per layer (each small op
    costs its dispatch, and on CUDA a kernel launch).

    Invariant between batches: each row is ordered by (value descending, image ascending), and
    every image in it has a smaller index than the images of the next batch.
    """

    def __init__(self, layers: Sequence[LayerInfo], k: int, device: torch.device) -> None:
        self.k = k
        self.layers: list[_Layer] = []
        rows = 0
        for info in layers:
            self.layers.append(_Layer(info, self, rows))
            rows += info.units
        self.values = torch.empty((rows, 0), dtype=torch.float32, device=device)
        self.images = torch.empty((rows, 0), dtype=torch.int64, device=device)
        # Flat row-major position of the maximum in the layer's map; 0 for linear layers.
        self.pos = torch.empty((rows, 0), dtype=torch.int32, device=device)
        # Per batch: global image indices; every unit's maximum per image and, for the pairs that
        # may enter the table, its position (written by the layers' hooks).
        self.batch_images = self.images.new_empty(0)
        self.batch_values = self.values.new_empty(0, rows)
        self.batch_pos = self.pos.new_empty(0, rows)
        # A batch value must beat its unit's k-th value to enter (a tie loses: the running image has
        # the smaller index); -inf while the table is not full.
        self.kth = self.values.new_full((rows,), -torch.inf)

    def start(self, images: Tensor) -> None:
        """Begin a batch whose images have these global indices (ascending, after all seen so far)."""
        self.batch_images = images
        self.batch_values = self.values.new_empty(len(images), self.values.shape[0])
        self.batch_pos = self.pos.new_zeros(len(images), self.values.shape[0])
        for layer in self.layers:
            layer.seen = False

    def merge(self) -> None:
        """Merge the batch into the running table: one stable sort over [running, batch] rows."""
        for layer in self.layers:
            if not layer.seen:
                raise ModelError(
                    f"layer {layer.info.name!r}: module {layer.info.module!r} did not run in the forward pass"
                )
        width = self.values.shape[1]
        candidates, cand_pos = self.batch_values.T, self.batch_pos.T  # [rows, B]
        values, images, pos = self.values, self.images, self.pos
        rows: Tensor | None = None  # the rows that change; None = all
        if width == self.k:
            # With thousands of images few units admit a new one: sort only their rows.
            rows = (candidates > self.kth.unsqueeze(1)).any(dim=1).nonzero().squeeze(1)
            if rows.numel() == 0:
                return
            if rows.numel() == len(self.kth):
                rows = None
            else:
                values, images, pos = values[rows], images[rows], pos[rows]
                candidates, cand_pos = candidates[rows], cand_pos[rows]
        merged = torch.cat([values, candidates], dim=1)
        # One STABLE sort orders by (value desc, image asc) thanks to the invariant: the running
        # entries come first and have the smaller images, the batch's follow in ascending order.
        order = merged.sort(dim=1, descending=True, stable=True).indices[:, : self.k]
        values = merged.gather(1, order)
        images = torch.cat([images, self.batch_images.expand(len(order), -1)], dim=1).gather(1, order)
        pos = torch.cat([pos, cand_pos], dim=1).gather(1, order)
        if rows is None:
            self.values, self.images, self.pos = values, images, pos
        else:
            self.values[rows], self.images[rows], self.pos[rows] = values, images, pos
        if self.values.shape[1] == self.k:
            self.kth = self.values[:, -1]

    def to_numpy(self) -> dict[str, LayerTopK]:
        """Per layer, numpy arrays padded to k slots (image -1, row/col -1, value NaN) if fewer images."""
        pad = ((0, 0), (0, self.k - self.values.shape[1]))
        values = np.pad(self.values.cpu().numpy(), pad, constant_values=np.nan)
        images = np.pad(self.images.cpu().numpy(), pad, constant_values=EMPTY)
        pos = np.pad(self.pos.cpu().numpy(), pad, constant_values=EMPTY)
        out = {}
        for layer in self.layers:
            sl = layer.rows
            p, cols = pos[sl], layer.map_cols
            out[layer.info.name] = LayerTopK(
                values=values[sl],
                images=images[sl],
                rows=np.where(p >= 0, p // cols, EMPTY).astype(np.int32),
                cols=np.where(p >= 0, p % cols, EMPTY).astype(np.int32),
            )
        return out


class _Layer:
    """One layer's hook: its batch maxima go into the table, with positions for possible entrants."""

    def __init__(self, info: LayerInfo, table: _Table, offset: int) -> None:
        self.info = info
        self.table = table
        self.rows = slice(offset, offset + info.units)
        # A ReLU layer is reduced from the ReLU's input (pre-hook): max(relu(x)) == relu(max(x)).
        self.relu = False
        self.map_cols = 1
        self.seen = False

    def update(self, act: Tensor) -> None:
        """Reduce one batch of the layer's activations ``[B, U, H, W]`` or ``[B, U]``."""
        if self.seen:
            raise ModelError(
                f"layer {self.info.name!r}: module {self.info.module!r} runs more than once per "
                "forward pass (a shared module); map a module that runs once"
            )
        self.seen = True
        if act.ndim not in (2, 4) or act.shape[1] != self.info.units:
            raise ModelError(
                f"layer {self.info.name!r}: activation of shape {tuple(act.shape[1:])} does not match "
                f"the layer table ({self.info.units} units)"
            )
        row_max = None
        if act.ndim == 2:
            peak = act
        elif act.is_contiguous() or not act.is_contiguous(memory_format=torch.channels_last):
            peak = act.amax(dim=(2, 3))
        else:
            # channels_last: [B, H, W, U] in memory. The maxima of each row come at the price of
            # amax over (H, W) (vgg16 conv1_1, batch 16, one thread: 24 vs 28 ms) and let _locate
            # find a maximum by reading one row of H values and one of W, not the whole map.
            row_max = act.permute(0, 2, 3, 1).amax(dim=2)  # [B, H, U]
            peak = row_max.amax(dim=1)
        batch = peak.float()
        if self.relu:
            batch = batch.relu()
        self.table.batch_values[:, self.rows] = batch
        if act.ndim == 4:
            self.map_cols = act.shape[3]
            # Positions only for the pairs that may enter the table: after the first batches a unit
            # admits about k * B / n_seen images per batch, a small fraction of a full argmax.
            image, unit = (batch > self.table.kth[self.rows]).nonzero(as_tuple=True)
            if image.numel():
                flat = _locate(act, row_max, peak, image, unit)
                if self.relu:
                    # A post-ReLU map whose max is 0 is all zeros: its first maximum is at 0.
                    flat = flat * (batch[image, unit] > 0)
                self.table.batch_pos[image, unit + self.rows.start] = flat


def _locate(act: Tensor, row_max: Tensor | None, peak: Tensor, image: Tensor, unit: Tensor) -> Tensor:
    """Flat row-major index of the first maximum of the maps ``act[image, unit]``, as int32.

    Only these maps are searched: ``max(dim)`` with indices over a whole channels_last batch was
    ~10x slower than ``amax`` (PERFORMANCE.md), and gathering whole maps from a channels_last
    tensor reads a cache line per element (alexnet conv1, 9 maps per channel: 6-16 ms).
    """
    if row_max is None:
        # Contiguous maps: copying them out is cheap; max(dim) returns the first maximum.
        return act[image, unit].flatten(1).max(dim=1).indices.int()
    # The first row holding the map's maximum, then the first column in that row: the first
    # maximum in row-major order, found exactly by equality with the maximum itself.
    target = peak[image, unit].unsqueeze(1)
    r = _first(row_max[image, :, unit] == target)
    return (r * act.shape[3] + _first(act[image, unit, r] == target)).int()


def _first(hit: Tensor) -> Tensor:
    """Index of the first True along dim 1 (``argmax`` returns the first maximal index)."""
    return hit.to(torch.uint8).argmax(dim=1)
