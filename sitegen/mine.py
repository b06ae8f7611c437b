"""Activation mining: ONE forward pass over the probe split, every layer at once.

For each unit (a channel of a conv layer, a neuron of a linear layer, a class of ``prob``) the
mining stage keeps the ``k`` probe images that excite it most, with the position of the maximum
(Zeiler & Fergus 2013, top-9 per unit). It also records each image's top-5 predictions and,
on request, the penultimate features. Memory is O(layers x units x k) on the device, never
O(dataset) (except the optional features, which are O(images x D) by nature).

How one batch is mined (speeds measured on a 2-core CPU, ``shared/PERFORMANCE.md``):

- One hook per layer reduces each channel's map to its maximum, values only. On a channels_last
  map, ``max(dim)`` with indices was ~10x slower than ``amax`` (157 vs 16 ms on a 205 MB map),
  which made naive mining of vgg16 1.65x a bare forward. For channels_last maps the hook takes
  the maximum of every row first (as fast as ``amax`` over the whole map), which later finds a
  maximum's position by reading H + W values instead of H x W.
- The batch maxima of all layers are merged into one stacked running table by a single stable
  sort over ``[running, batch]``, restricted to the units whose batch maximum beats their k-th
  value: a few large ops per batch rather than a dozen small ones per layer.
- Only the (unit, image) pairs that *enter* the table get a position. A unit admits about
  ``k * B / n_seen`` new images per batch, so after the first batches this is a small fraction
  of a full argmax, and exact: no second pass over the top images is needed.
- A layer whose module is a ReLU (``conv1`` is the ReLU after the first conv) is reduced from
  the ReLU's *input* in a forward pre-hook and ``relu`` is applied to the reduced values:
  ``max(relu(x)) == relu(max(x))``, so one reduction per conv suffices (hooking conv and ReLU
  outputs cost 1.12-1.65x a bare forward), and the pre-hook runs before an in-place ReLU
  (torchvision alexnet/vgg use ``inplace=True``) overwrites the map. Every reduction happens
  inside its hook, before any later in-place op can touch the tensor.
- The input is fed channels_last (1.2-1.4x faster forward on that CPU; converting the input
  alone was as fast as converting the model too, so the caller's module is left as it is).

Measured with ``benchmarks/mining.py`` (batch 16, one thread, bare and mined batches interleaved,
on a shared machine): mining took 1.06x a bare forward for alexnet (320 images, channels_last and
contiguous alike) and 0.95-1.05x for vgg16 (64 images, within that machine's noise).

Ties are exact and deterministic: value descending, then image index ascending; within one map
the first maximum in row-major order wins, as with ``numpy.argmax``.
For a post-ReLU layer whose maximum is 0 the whole map is 0 and the position is (0, 0).

Under ``torch.distributed`` (see :mod:`sitegen._distributed`) each rank mines a contiguous shard
of the probe split with global image indices, then the tables and predictions are merged with
``all_gather``: every rank returns the same :class:`Mined` as a single-process run.

Per-image activations (issue 15, item 1): with ``activations=PATH`` every unit's maximum on every
image (the hooks' batch maxima, post-ReLU where the layer is a ReLU) is also streamed, batch by
batch, as float16 into a memory-mapped ``.npy`` of shape ``[N, total units]`` (layers side by side
in layer-table order; :class:`Activations` holds the column offsets). RAM stays flat in the probe
set: one batch's ``[B, total units]`` rows at a time. Under ``torch.distributed`` rank 0 creates the
file and every rank writes its shard's rows. Values beyond float16's range are clipped to ±65504.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from sitegen import _distributed
from sitegen.errors import ModelError
from sitegen.models._api import LayerInfo, LoadedModel
from sitegen.store.activations import Activations, LayerColumns

__all__ = ["Activations", "LayerColumns", "LayerTopK", "Mined", "mine"]

log = logging.getLogger(__name__)

#: float16's largest finite value: per-image maxima are clipped to +-F16_MAX before storing.
F16_MAX = 65504.0

#: Top-5 predictions are padded with this class index when the model has fewer than 5 classes.
EMPTY = -1


@dataclass(frozen=True, slots=True)
class LayerTopK:
    """The top-k probe images of every unit of one layer, best first.

    Entry ``[u, r]`` is unit ``u``'s rank ``r + 1`` image. Ties are broken by image index
    (ascending). When the probe split has fewer than ``k`` images the trailing slots are empty:
    ``images == -1``, ``rows == cols == -1`` and ``values`` is NaN.

    Attributes:
        values: float32[U, k], the unit's maximum over the image (post-ReLU for ``conv`` layers
            whose module is the ReLU).
        images: int64[U, k], probe image indices (global, whatever the sharding).
        rows: int32[U, k], row of the maximum in the layer's map (0 for linear and prob layers).
        cols: int32[U, k], column of the maximum (0 for linear and prob layers).
    """

    values: np.ndarray
    images: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    @property
    def k(self) -> int:
        """Slots per unit."""
        return int(self.images.shape[1])


@dataclass(frozen=True)
class Mined:
    """Everything the analyses need from the single pass over the probe split.

    Attributes:
        layers: friendly layer name -> :class:`LayerTopK`, in the order of ``LoadedModel.layers``.
        labels: int64[N], the probe labels.
        top5: int64[N, 5], the five most probable classes per image, most probable first
            (ties by class index; ``-1`` pads when the model has fewer than 5 classes).
        top5_prob: float32[N, 5], their softmax probabilities (0 in padded slots).
        features: float32[N, D], the input of the model's last ``nn.Linear`` (penultimate
            features) when requested, else None.
        activations: the per-image maxima file (``mine(activations=PATH)``), else None.
    """

    layers: dict[str, LayerTopK]
    labels: np.ndarray
    top5: np.ndarray
    top5_prob: np.ndarray
    features: np.ndarray | None = None
    activations: Activations | None = None


def mine(
    model: LoadedModel,
    probe: Dataset,
    *,
    k: int = 9,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    autocast: bool = False,
    features: bool = False,
    progress: Callable[[int, int], None] | None = None,
    channels_last: bool = True,
    activations: Path | None = None,
) -> Mined:
    """Mine the top-k images of every unit of ``model.layers`` in one pass over ``probe``.

    The module is moved to ``device`` (and stays there) and run in eval mode under
    ``torch.inference_mode``; its training flag is restored afterwards. When
    ``torch.distributed`` is initialized, each rank mines its contiguous shard of ``probe`` and
    every rank returns the merged result, identical to a single-process run.

    Args:
        model: the network and its layer table; ``prob`` (module ``""``) is the softmax of the
            output, ``linear`` layers count each neuron as a unit at row = col = 0.
        probe: yields ``(image, label)``: un-normalized [0, 1] ``Tensor[3, H, W]`` and an int.
            Normalized on the device with ``model.normalize``.
        k: images kept per unit.
        batch_size: images per forward pass (16 was faster than 64 for VGG on a 2-core CPU).
        device: where the forward pass and the running tables live.
        num_workers: DataLoader worker processes.
        autocast: mixed precision on CUDA (ignored, with a warning, on other devices).
        features: also keep the penultimate features (``Mined.features``).
        progress: called after every batch with (images done, images total) of this rank.
        channels_last: feed the network channels_last input (1.2-1.4x faster on CPU).
        activations: also write every unit's maximum on every image, float16 ``[N, total units]``,
            to this ``.npy`` (memory-mapped, one batch at a time; replaced if it exists).

    Returns:
        The per-layer top-k tables and the per-image predictions, as numpy arrays.

    Raises:
        ModelError: a layer's module is missing, runs more than once per forward pass, does not
            run, or its output does not match the layer table; ``features`` without an ``nn.Linear``.

    Example:
        Unit 7 of conv5: its best probe image and where in the map its maximum lies.

        >>> mined = mine(loaded, bundle.probe, k=9, batch_size=16)  # doctest: +SKIP
        >>> best = mined.layers["conv5"]  # doctest: +SKIP
        >>> best.images[7, 0], best.rows[7, 0], best.cols[7, 0]  # doctest: +SKIP
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    device = torch.device(device)
    _check_layers(model.layers, dict(model.module.named_modules()))
    head = _last_linear(model.module) if features else None
    if features and head is None:
        raise ModelError(f"{model.arch}: features=True needs an nn.Linear (its input is the feature)")
    use_autocast = autocast and device.type == "cuda"
    if autocast and not use_autocast:
        log.warning("autocast is only used on CUDA; mining on %s in float32", device)

    rank, world = _distributed.rank_world()
    n = len(probe)  # type: ignore[arg-type]
    shard = _distributed.shard(n, rank, world)
    dataset = probe if world == 1 else Subset(probe, shard)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )

    table = _Table(model.layers, k, device)
    acts = None
    if activations is not None:
        acts = _open_activations(Path(activations), n, table, rank, world)
    local = _mine_shard(
        model,
        loader,
        table,
        shard,
        device,
        head=head,
        autocast=use_autocast,
        channels_last=channels_last,
        progress=progress,
        acts=acts,
    )
    if acts is not None:
        acts.flush()
        del acts
    if world > 1:
        local = _merge_ranks(local, n, world)
    return Mined(
        layers=local.table.to_numpy(),
        labels=local.labels.cpu().numpy(),
        top5=local.top5.cpu().numpy(),
        top5_prob=local.top5_prob.cpu().numpy(),
        features=None if local.features is None else local.features.cpu().numpy(),
        activations=None
        if activations is None
        else Activations(
            Path(activations),
            {layer.info.name: layer.rows.start for layer in table.layers},
            {layer.info.name: layer.info.units for layer in table.layers},
        ),
    )


def _open_activations(path: Path, n: int, table: _Table, rank: int, world: int) -> _RowWriter:
    """Rank 0 creates the ``[n, rows]`` float16 file; then every rank opens it to write its rows."""
    if rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # never write through a hard link (a site may share the file)
        shape = (n, int(table.values.shape[0]))
        created = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        created.flush()
        del created  # only the header and the file's size: rows are written with pwrite below
    _distributed.barrier()
    return _RowWriter(path)


class _RowWriter:
    """Rows of a float16 ``.npy`` written with ``pwrite``.

    Writing through a memory map keeps every written page in the process's RSS until the map goes
    (10,000 alexnet images: +193 MB, issue 13's "RSS flat in the probe set"); written with pwrite they
    sit in the kernel's page cache only. Each batch's rows are consecutive: one write per batch.
    """

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _fortran, dtype = read(f)
            self.offset = f.tell()
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        self._fd = os.open(path, os.O_WRONLY)

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=np.float16).tobytes()
        os.pwrite(self._fd, data, self.offset + int(rows.start) * self.row_bytes)

    def flush(self) -> None:
        os.close(self._fd)


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


def _rank(values: Tensor, images: Tensor, k: int) -> Tensor:
    """Column order of the ``k`` best entries per row: value descending, then image ascending.

    Two stable sorts give the lexicographic order (``torch.topk`` is not stable). An image occurs
    at most once per row, so the order is total and the result does not depend on how the
    entries were laid out (running table first, or ranks in any order).
    """
    by_image = images.argsort(dim=1, stable=True)
    by_value = values.gather(1, by_image).sort(dim=1, descending=True, stable=True).indices
    return by_image.gather(1, by_value[:, :k])


@dataclass
class _Local:
    """One rank's results, still tensors on the device."""

    table: _Table
    labels: Tensor
    top5: Tensor
    top5_prob: Tensor
    features: Tensor | None


def _mine_shard(
    model: LoadedModel,
    loader: DataLoader,
    table: _Table,
    shard: range,
    device: torch.device,
    *,
    head: nn.Linear | None,
    autocast: bool,
    channels_last: bool,
    progress: Callable[[int, int], None] | None,
    acts: _RowWriter | None = None,
) -> _Local:
    """The pass itself: the hooks fill the table's batch, one merge per batch; predictions on the side."""
    module = model.module
    named = dict(module.named_modules())
    on_output = [layer for layer in table.layers if layer.info.module == ""]
    labels: list[Tensor] = []
    top5: list[Tensor] = []
    top5_prob: list[Tensor] = []
    feats: list[Tensor] = []
    was_training = module.training
    module.to(device).eval()
    try:
        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            stack.enter_context(_hooks(named, [layer for layer in table.layers if layer.info.module != ""]))
            if head is not None:
                stack.enter_context(_capture_input(head, feats))
            if autocast:
                stack.enter_context(torch.autocast(device.type))
            done = 0
            for x, y in loader:
                # Normalize, then convert: normalizing a channels_last [16, 3, 224, 224] batch took
                # 6.8 ms, normalizing then converting 3.9 ms (one thread; ~3 % of an alexnet forward).
                x = model.normalize(x.to(device, non_blocking=True))
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                table.start(torch.arange(shard.start + done, shard.start + done + len(x), device=device))
                out = module(x)
                if not isinstance(out, Tensor) or out.ndim != 2:
                    raise ModelError(f"{model.arch}: expected the model to return [batch, classes] logits")
                prob = torch.softmax(out.float(), dim=1)
                for layer in on_output:
                    layer.update(prob if layer.info.kind == "prob" else out)
                if acts is not None:
                    start = shard.start + done
                    rows = table.batch_values.clamp(-F16_MAX, F16_MAX).to(torch.float16)
                    acts[start : start + len(x)] = rows.cpu().numpy()
                table.merge()
                best, cls = prob.sort(dim=1, descending=True, stable=True)
                top5.append(cls[:, :5])
                top5_prob.append(best[:, :5])
                labels.append(torch.as_tensor(y).to(device, torch.int64, non_blocking=True))
                done += len(x)
                if progress is not None:
                    progress(done, len(shard))
    finally:
        module.train(was_training)
    return _Local(
        table=table,
        labels=_cat(labels, (0,), torch.int64, device),
        top5=_pad_classes(_cat(top5, (0, 5), torch.int64, device), EMPTY),
        top5_prob=_pad_classes(_cat(top5_prob, (0, 5), torch.float32, device), 0.0),
        features=None if head is None else _cat(feats, (0, head.in_features), torch.float32, device),
    )


def _merge_ranks(local: _Local, n: int, world: int) -> _Local:
    """All-gather every rank's table and predictions; the same tie-broken order as one rank."""
    table = local.table
    shard_sizes = [len(_distributed.shard(n, r, world)) for r in range(world)]
    widths = [min(table.k, s) for s in shard_sizes]
    values = _distributed.all_gather_cat(table.values, widths, dim=1)
    images = _distributed.all_gather_cat(table.images, widths, dim=1)
    order = _rank(values, images, table.k)
    table.values, table.images = values.gather(1, order), images.gather(1, order)
    table.pos = _distributed.all_gather_cat(table.pos, widths, dim=1).gather(1, order)
    # A rank with an empty shard never saw the maps: agree on their widths to decode positions.
    cols = table.images.new_tensor([layer.map_cols for layer in table.layers])
    cols = _distributed.all_gather_cat(cols.unsqueeze(0), [1] * world).amax(dim=0)
    for layer, c in zip(table.layers, cols.tolist(), strict=True):
        layer.map_cols = c
    gather = partial(_distributed.all_gather_cat, sizes=shard_sizes, dim=0)
    return _Local(
        table=table,
        labels=gather(local.labels),
        top5=gather(local.top5),
        top5_prob=gather(local.top5_prob),
        features=None if local.features is None else gather(local.features),
    )


def _check_layers(layers: Sequence[LayerInfo], named: dict[str, nn.Module]) -> None:
    """Every layer's module must exist (``""`` is the model output); list the valid paths if not."""
    missing = [info for info in layers if info.module not in named]
    if missing:
        bad = ", ".join(f"{info.name!r} (module {info.module!r})" for info in missing)
        valid = ", ".join(repr(p) for p in named if p)
        raise ModelError(f"layers {bad} not found in the network; valid module paths: {valid}")


@contextmanager
def _hooks(named: dict[str, nn.Module], layers: Sequence[_Layer]) -> Iterator[None]:
    """Hook each layer onto its module: pre-hook on a ReLU's input, else hook the output."""
    handles = []
    try:
        for layer in layers:
            target = named[layer.info.module]
            layer.relu = type(target) is nn.ReLU
            if layer.relu:
                hook = target.register_forward_pre_hook(lambda _m, args, la=layer: la.update(args[0]))
            else:
                hook = target.register_forward_hook(lambda _m, _a, out, la=layer: la.update(out))
            handles.append(hook)
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def _capture_input(linear: nn.Linear, out: list[Tensor]) -> Iterator[None]:
    """Append a float32 copy of ``linear``'s input (flattened) to ``out`` at every call."""

    def hook(_m: nn.Module, args: tuple[Tensor, ...]) -> None:
        # A copy: a later in-place op must not change what was recorded.
        out.append(args[0].flatten(1).to(torch.float32, copy=True))

    handle = linear.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _last_linear(module: nn.Module) -> nn.Linear | None:
    """The last ``nn.Linear`` registered in the module tree (the classifier head), if any."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _cat(parts: list[Tensor], empty: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Concatenate per-batch tensors along dim 0 (an empty tensor of shape ``empty`` if none)."""
    return torch.cat(parts) if parts else torch.empty(empty, dtype=dtype, device=device)


def _pad_classes(t: Tensor, fill: float) -> Tensor:
    """Pad ``[N, c]`` to ``[N, 5]`` when the model has fewer than 5 classes."""
    if t.shape[1] >= 5:
        return t
    return torch.nn.functional.pad(t, (0, 5 - t.shape[1]), value=fill)
