"""Activation mining: ONE forward pass over the probe split, every layer at once.

For each unit (a channel of a conv layer, a neuron of a linear layer, a class of ``prob``) the
mining stage keeps the ``k`` probe images that excite it most, with the position of the maximum
(Zeiler & Fergus 2013, top-9 per unit). It also records each image's top-5 predictions and,
on request, the penultimate features. Memory is O(layers x units x k) on the device, never
O(dataset) (except the optional features, which are O(images x D) by nature).

How one batch is mined (speeds measured on a 2-core CPU in ``shared/PERFORMANCE.md``):

- One hook per layer takes the per-channel spatial max with ``amax`` (values only). On a
  channels_last map, ``max(dim)`` with indices was ~10x slower than ``amax`` (157 vs 16 ms on a
  205 MB map), which made naive mining of vgg16 1.65x a bare forward.
- The batch maxima are merged into the running table by a sort over ``[running, batch]``.
  Only the (unit, image) pairs that *enter* the table need a position, so the argmax is taken
  over just those maps, gathered from the activation. After the first few batches a unit
  admits ~``k * B / n_seen`` new images per batch, so this costs a small fraction of a full
  argmax, and the result is exact (no second pass over the top images).
- A layer whose module is a ReLU (``conv1`` is the ReLU after the first conv) is reduced from
  the ReLU's *input* in a forward pre-hook and ``relu`` is applied to the reduced values:
  ``max(relu(x)) == relu(max(x))``, so one reduction per conv suffices (hooking conv and ReLU
  outputs cost 1.12-1.65x a bare forward), and the pre-hook runs before an in-place ReLU
  (torchvision alexnet/vgg use ``inplace=True``) overwrites the map. Every reduction happens
  inside its hook, before any later in-place op can touch the tensor.
- The input is fed channels_last (1.2-1.4x faster forward on that CPU; converting the input
  alone was as fast as converting the model too, so the caller's module is left as it is).

Ties are exact and deterministic: value descending, then image index ascending; within one map
the first maximum in row-major order wins (``torch.argmax`` returns the first maximal index).
For a post-ReLU layer whose maximum is 0 the whole map is 0 and the position is (0, 0).

Under ``torch.distributed`` (see :mod:`sitegen._distributed`) each rank mines a contiguous shard
of the probe split with global image indices, then the tables and predictions are merged with
``all_gather``: every rank returns the same :class:`Mined` as a single-process run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from sitegen import _distributed
from sitegen.errors import ModelError
from sitegen.models._api import LayerInfo, LoadedModel

__all__ = ["LayerTopK", "Mined", "mine"]

log = logging.getLogger(__name__)

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
    """

    layers: dict[str, LayerTopK]
    labels: np.ndarray
    top5: np.ndarray
    top5_prob: np.ndarray
    features: np.ndarray | None = None


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

    Returns:
        The per-layer top-k tables and the per-image predictions, as numpy arrays.

    Raises:
        ModelError: a layer's module is missing, runs more than once per forward pass, does not
            run, or its output does not match the layer table; ``features`` without an ``nn.Linear``.

    Example:
        >>> mined = mine(loaded, bundle.probe, k=9, batch_size=16)  # doctest: +SKIP
        >>> t = mined.layers["conv5"]
        >>> t.images[7, 0], t.rows[7, 0], t.cols[7, 0]  # unit 7's best image and its maximum
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    device = torch.device(device)
    module = model.module
    named = dict(module.named_modules())
    _check_layers(model.layers, named)
    head = _last_linear(module) if features else None
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

    tables = [_TopK(info, k, device) for info in model.layers]
    output_tables = [t for t in tables if t.info.module == ""]
    labels: list[Tensor] = []
    top5: list[Tensor] = []
    top5_prob: list[Tensor] = []
    feats: list[Tensor] = []
    was_training = module.training
    module.to(device).eval()
    try:
        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            stack.enter_context(_hooks(named, [t for t in tables if t.info.module != ""]))
            if head is not None:
                stack.enter_context(_capture_input(head, feats))
            if use_autocast:
                stack.enter_context(torch.autocast(device.type))
            done = 0
            for x, y in loader:
                x = x.to(device, non_blocking=True)
                if channels_last and x.ndim == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                x = model.normalize(x)
                index = torch.arange(shard.start + done, shard.start + done + len(x), device=device)
                for t in tables:
                    t.start(index)
                out = module(x)
                if not isinstance(out, Tensor) or out.ndim != 2:
                    raise ModelError(f"{model.arch}: expected the model to return [batch, classes] logits")
                prob = torch.softmax(out.float(), dim=1)
                for t in output_tables:
                    t.update(prob if t.info.kind == "prob" else out)
                for t in tables:
                    t.finish()
                best, cls = prob.sort(dim=1, descending=True, stable=True)
                top5.append(cls[:, :5])
                top5_prob.append(best[:, :5])
                labels.append(torch.as_tensor(y).to(device, torch.int64, non_blocking=True))
                done += len(x)
                if progress is not None:
                    progress(done, len(shard))
    finally:
        module.train(was_training)

    local = _Local(
        tables=tables,
        labels=_cat(labels, (0,), torch.int64, device),
        top5=_pad_classes(_cat(top5, (0, 5), torch.int64, device), EMPTY),
        top5_prob=_pad_classes(_cat(top5_prob, (0, 5), torch.float32, device), 0.0),
        features=_cat(feats, (0, head.in_features), torch.float32, device) if head is not None else None,
    )
    if world > 1:
        local = _merge_ranks(local, n, world, k)
    return Mined(
        layers={t.info.name: t.to_numpy() for t in local.tables},
        labels=local.labels.cpu().numpy(),
        top5=local.top5.cpu().numpy(),
        top5_prob=local.top5_prob.cpu().numpy(),
        features=None if local.features is None else local.features.cpu().numpy(),
    )


class _TopK:
    """Running top-k table of one layer, on the device; grows to k columns, then stays."""

    def __init__(self, info: LayerInfo, k: int, device: torch.device) -> None:
        self.info = info
        self.k = k
        # A ReLU layer is reduced from the ReLU's input (pre-hook): max(relu(x)) == relu(max(x)).
        self.relu = False
        self.values = torch.empty((info.units, 0), dtype=torch.float32, device=device)
        self.images = torch.empty((info.units, 0), dtype=torch.int64, device=device)
        self.rows = torch.empty((info.units, 0), dtype=torch.int32, device=device)
        self.cols = torch.empty((info.units, 0), dtype=torch.int32, device=device)
        self._batch = self.images.new_empty(0)
        self._seen = False

    def start(self, images: Tensor) -> None:
        """Begin a batch whose images have these global indices."""
        self._batch = images
        self._seen = False

    def finish(self) -> None:
        """End a batch: the layer's module must have run exactly once."""
        if not self._seen:
            raise ModelError(
                f"layer {self.info.name!r}: module {self.info.module!r} did not run in the forward pass"
            )

    def update(self, act: Tensor) -> None:
        """Merge one batch of the layer's activations ``[B, U, H, W]`` or ``[B, U]``."""
        if self._seen:
            raise ModelError(
                f"layer {self.info.name!r}: module {self.info.module!r} runs more than once per "
                "forward pass (a shared module); map a module that runs once"
            )
        self._seen = True
        if act.ndim not in (2, 4) or act.shape[1] != self.info.units:
            raise ModelError(
                f"layer {self.info.name!r}: activation of shape {tuple(act.shape[1:])} does not match "
                f"the layer table ({self.info.units} units)"
            )
        spatial = act.ndim == 4
        batch = act.amax(dim=(2, 3)) if spatial else act
        batch = batch.float()
        if self.relu:
            batch = batch.relu()
        width = self.values.shape[1]
        units, n = self.info.units, batch.shape[0]
        values = torch.cat([self.values, batch.T], dim=1)
        images = torch.cat([self.images, self._batch.expand(units, n)], dim=1)
        order = _rank(values, images, self.k)
        zeros = self.rows.new_zeros(units, n)
        self.values = values.gather(1, order)
        self.images = images.gather(1, order)
        self.rows = torch.cat([self.rows, zeros], dim=1).gather(1, order)
        self.cols = torch.cat([self.cols, zeros], dim=1).gather(1, order)
        if spatial:
            self._locate(act, order, width)

    def _locate(self, act: Tensor, order: Tensor, width: int) -> None:
        """Argmax only of the maps that entered the table (cheap: amax did the full reduction)."""
        unit, slot = (order >= width).nonzero(as_tuple=True)
        if unit.numel() == 0:
            return
        maps = act[order[unit, slot] - width, unit]  # [P, H, W], a copy: safe from in-place ops
        flat = maps.flatten(1).argmax(dim=1)
        cols = act.shape[3]
        row, col = (flat // cols).int(), (flat % cols).int()
        if self.relu:
            # A post-ReLU map whose max is 0 is all zeros: its first maximum is (0, 0).
            positive = self.values[unit, slot] > 0
            row, col = row * positive, col * positive
        self.rows[unit, slot] = row
        self.cols[unit, slot] = col

    def to_numpy(self) -> LayerTopK:
        """The table as numpy arrays, padded to k slots (image -1, value NaN) if fewer images."""
        pad = self.k - self.values.shape[1]
        values, images = self.values.cpu().numpy(), self.images.cpu().numpy()
        rows, cols = self.rows.cpu().numpy(), self.cols.cpu().numpy()
        if pad:
            values = np.pad(values, ((0, 0), (0, pad)), constant_values=np.nan)
            images = np.pad(images, ((0, 0), (0, pad)), constant_values=EMPTY)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=EMPTY)
            cols = np.pad(cols, ((0, 0), (0, pad)), constant_values=EMPTY)
        return LayerTopK(values=values, images=images, rows=rows, cols=cols)


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

    tables: list[_TopK]
    labels: Tensor
    top5: Tensor
    top5_prob: Tensor
    features: Tensor | None


def _merge_ranks(local: _Local, n: int, world: int, k: int) -> _Local:
    """All-gather every rank's tables and predictions; the same tie-broken merge as one rank."""
    shard_sizes = [len(_distributed.shard(n, r, world)) for r in range(world)]
    widths = [min(k, s) for s in shard_sizes]
    for t in local.tables:
        values = _distributed.all_gather_cat(t.values, widths, dim=1)
        images = _distributed.all_gather_cat(t.images, widths, dim=1)
        order = _rank(values, images, k)
        t.values, t.images = values.gather(1, order), images.gather(1, order)
        t.rows = _distributed.all_gather_cat(t.rows, widths, dim=1).gather(1, order)
        t.cols = _distributed.all_gather_cat(t.cols, widths, dim=1).gather(1, order)
    feats = local.features
    return _Local(
        tables=local.tables,
        labels=_distributed.all_gather_cat(local.labels, shard_sizes, dim=0),
        top5=_distributed.all_gather_cat(local.top5, shard_sizes, dim=0),
        top5_prob=_distributed.all_gather_cat(local.top5_prob, shard_sizes, dim=0),
        features=None if feats is None else _distributed.all_gather_cat(feats, shard_sizes, dim=0),
    )


def _check_layers(layers: Sequence[LayerInfo], named: dict[str, nn.Module]) -> None:
    """Every layer's module must exist (``""`` is the model output); list the valid paths if not."""
    missing = [info for info in layers if info.module not in named]
    if missing:
        bad = ", ".join(f"{info.name!r} (module {info.module!r})" for info in missing)
        valid = ", ".join(repr(p) for p in named if p)
        raise ModelError(f"layers {bad} not found in the network; valid module paths: {valid}")


@contextmanager
def _hooks(named: dict[str, nn.Module], tables: Sequence[_TopK]) -> Iterator[None]:
    """Hook each table onto its module: pre-hook on a ReLU's input, else hook the output."""
    handles = []
    try:
        for t in tables:
            target = named[t.info.module]
            t.relu = type(target) is nn.ReLU
            if t.relu:
                handles.append(target.register_forward_pre_hook(lambda _m, args, t=t: t.update(args[0])))
            else:
                handles.append(target.register_forward_hook(lambda _m, _a, out, t=t: t.update(out)))
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
