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

The package, one job per module: :mod:`~sitegen.mine.results` (the public types), ``_table`` (the
stacked running top-k and the per-layer hooks' reductions), ``_pass`` (the forward pass, hooks and
the merge across ranks), ``_activations`` (streaming the per-image maxima file) and, here,
:func:`mine`, the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from sitegen import _distributed
from sitegen.errors import ModelError
from sitegen.mine._activations import F16_MAX as F16_MAX
from sitegen.mine._activations import _open_activations
from sitegen.mine._pass import _check_layers, _last_linear, _merge_ranks, _mine_shard
from sitegen.mine._table import _Table
from sitegen.mine.results import EMPTY as EMPTY
from sitegen.mine.results import LayerTopK, Mined
from sitegen.models.types import LoadedModel
from sitegen.store.activations import Activations, LayerColumns

__all__ = ["Activations", "LayerColumns", "LayerTopK", "Mined", "mine"]

log = logging.getLogger(__name__)


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
