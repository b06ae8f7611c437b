"""Deconvnet, guided-backprop and gradient reconstructions of single units.

A reconstruction projects one unit's activation back to input pixels (Zeiler & Fergus 2013, section
2.1): the backward pass starts from the unit's activation at one position (every other activation of
the layer set to zero), max-pools route the signal by their forward switches, convolutions are applied
transposed, and the three methods differ only at the ReLUs:

- ``deconvnet`` (Zeiler & Fergus): ``relu(signal)``, whatever the sign of the forward input;
- ``guided`` (Springenberg et al. 2015): ``relu(signal)`` where the forward input was positive;
- ``gradient`` (Simonyan et al. 2014): the plain gradient, ``signal`` where the forward input was positive.

Autograd does the routing and the transposed convolutions; :mod:`sitegen.analyses._hooks` swaps the
ReLU backward (``nn.ReLU`` modules only: a functional ReLU raises ``ModelError`` for deconvnet/guided).
On plain conv/pool/ReLU chains the same backward may instead run explicitly (:class:`_Cone`, below).
The backward is seeded with the unit's activation *value*, so a reconstruction equals captum's
``NeuronDeconvolution`` / ``NeuronGuidedBackprop`` / ``NeuronGradient`` (which seed with 1) times
that value: a strong activation projects to a strong picture.

Speed (shared/PERFORMANCE.md: captum took 22–29 ms per (unit, image) call on alexnet, mostly
computing what a single unit never sees):

- the forward stops at the target layer (the classifier is never run);
- many (unit, image) pairs share one forward/backward;
- a reconstruction is zero outside the unit's receptive field, so each pair runs on a crop of the
  input to that field (exact; see :mod:`sitegen.analyses._crop`), crops of one shape batched together
  (with many pairs, border crops are lengthened to a few shared shapes so that they batch). Crops
  need the network up to the target to be a chain of conv/pool/pointwise modules (checked on one
  traced forward per call); otherwise, and for linear/prob layers, the whole image is used;
- whole-image pairs (linear and prob layers, or no crop chain) share one forward per distinct image
  and run many units' backward signals in one batched backward: a batch of images is forwarded with
  its graph retained, and each backward round seeds one pair of every image of the batch
  (:meth:`_Engine._whole`, batches from :func:`_schedule`); that is the bare batched backward, plus
  one forward per image. ``reconstruct_topk`` feeds those layers image block by image block (each
  distinct image loaded and forwarded once for every unit that ranks it, memory bounded by
  ``_IMAGE_BLOCK`` images): 36,864 fc6 pairs over 3,040 images take about 3,100 forwards (a random
  table), not 36,864;
- a strided conv's input gradient (oneDNN's slow transposed conv, alexnet's conv1) is computed as a
  stride-1 conv plus a pixel shuffle, on crops and whole images alike
  (:func:`sitegen.analyses._hooks.phase_backward`: equal up to float rounding, about 3x faster for
  that conv; alexnet's whole-image fc6 backward 10 ms a pair instead of 13);
- when many pairs share an image (a probe image's top channels in every layer), a crop forward per
  pair repeats work: each distinct image is then forwarded once, recording the max-pool switches,
  and each pair's backward runs without autograd on its receptive-field cone only (:class:`_Cone`,
  chosen by an estimate of the conv multiply-adds of both ways; ``shared_forward`` forces either).

Conv layers at seed scale stay on the crop path (issue 13, item 2; alexnet, 160 classes, 3,040 probe
images, every conv unit: 10,368 conv1..conv5 pairs on 2,388 distinct images). Forwarding each distinct
image once for every conv layer and running cone backwards was measured and is slower: a whole 224 px
forward up to conv5 costs about the multiply-adds of the crops of the ~4 pairs an image has (a conv5
crop is 163 px), and the cones saved at most ~20 % of the autograd backward (one thread, CPU seconds:
conv3 whole forwards 17.8 + cones 3.3 against crop forwards 4.4 + backwards 3.9; conv2 8.9 + 0.4
against 0.3 + 0.3). A crop forward costs about what its backward does, so forward + backward, about
2x the bare backward, is that path's floor; what remains above it is loading (uint8 pixels, converted
once a block: ``reconstruct_topk``'s ``pixels``) and drawing the tiles.

benchmarks/reconstruct.py measures it (shared 2-core CPU). ``--part c``, against the bare batched
backward per layer kind (alexnet 224 px, CPU time on one thread of a busy machine): fc6/fc7/fc8/prob
1.08-1.12x of it (1.8x before the shared forward); conv2..conv5 1.6-2.0x, as each conv pair's crop is
forwarded as well as backpropagated (the same multiply-adds), and pairs of one layer rarely share an
image. 14-19x captum per (unit, image) over a whole alexnet atlas (crop path). vgg16's top-3
channels of 13 layers on one image (shared forward, cone backwards: 38 G conv multiply-adds, against
338 G for one backward per feature): 4.9x faster than one retained forward plus one backward per
feature on one thread (2.2 s against 10.6 s), 2.0-3.1x on two threads of a machine that other jobs
kept busy.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from sitegen.analyses import _crop, _hooks
from sitegen.errors import ModelError
from sitegen.models._api import LayerInfo, LoadedModel
from sitegen.receptive_field import RF, unit_box

__all__ = ["reconstruct", "reconstruct_topk", "to_display", "display_cell", "display_peak"]

Emit = Callable[[Tensor, Tensor, Sequence[int], Sequence[int]], None]

# Pairs per forward/backward at full image size; crops scale it by area (batch 16 beat 64 for VGG on a
# 2-core CPU, shared/PERFORMANCE.md).
DEFAULT_BATCH = 16
_MAX_CHUNK = 4096
# Distinct images held (as float) at once by reconstruct_topk's whole-image path: 128 x 3 x 224 x 224
# float32 is 77 MB.
_IMAGE_BLOCK = 128
# From this many pairs per layer on, border crops are rounded to shared lengths (see _Engine._quantum).
_BUCKET_MIN_PAIRS = 32


def reconstruct(
    model: nn.Module | LoadedModel,
    layer: str | Sequence[str],
    images: Tensor,
    units: Sequence[int] | Tensor,
    positions: Sequence[tuple[int, int]] | Tensor | None = None,
    method: str = "deconvnet",
    *,
    batch_size: int = DEFAULT_BATCH,
    crop: bool = True,
    shared_forward: bool | None = None,
) -> Tensor:
    """Reconstruct one unit per image in input space.

    Element ``b`` is the reconstruction of unit ``units[b]`` of ``layer`` at ``positions[b]`` (or at
    its maximum over ``images[b]``): the backward pass is seeded with the unit's activation value
    there (zero elsewhere), so the result equals captum's neuron attribution (seed 1) times that
    value. (For a negative value, possible at a conv output before its ReLU, deconvnet and guided
    backprop are not sign-symmetric: the result is the reconstruction of the negative seed.)

    Args:
        model: the network (eval mode), or a :class:`~sitegen.models.LoadedModel`.
        layer: ``named_modules()`` path of the layer's module; for a ``LoadedModel`` also a friendly
            layer name (``conv5``, ``fc7``, ``prob``: the softmax of the output). A sequence gives
            one layer per element (one traced forward serves them all).
        images: ``[B, 3, H, W]`` on the model's device: the model's actual (normalized) inputs. The
            build normalizes first (``LoadedModel.normalize``), as reconstructions live in the space of
            the first conv's input (Zeiler & Fergus).
        units: ``B`` channel (conv) or neuron (linear, prob) indices.
        positions: ``B`` ``(row, col)`` positions in the layer's map, or None for each unit's argmax in
            its image (first maximum in row-major order). Ignored for linear and prob layers.
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        batch_size: (unit, image) pairs per forward/backward at full image size; receptive-field crops
            batch proportionally more.
        crop: compute on receptive-field crops where exact (the result is the same either way).
        shared_forward: forward each distinct image once for all its pairs and crop each backward to
            the unit's receptive-field cone (:class:`_Cone`; equal images count as one, e.g.
            ``image.expand(n, -1, -1, -1)``). None: when the network up to every
            layer is a supported chain and the estimated work is smaller than a crop forward per pair;
            True: whenever supported; False: never. The result is the same either way.

    Returns:
        ``[B, 3, H, W]``, zero outside each unit's receptive field.

    Raises:
        ModelError: unknown layer, a unit or position outside the layer, or a functional ReLU before
            the layer (deconvnet/guided need ``nn.ReLU`` modules).

    Example:
        >>> net = torchvision.models.alexnet().eval()
        >>> x = torch.randn(2, 3, 224, 224)
        >>> rec = reconstruct(net, "features.11", x, units=[7, 42])  # conv5 units at their maxima
    """
    if images.dim() != 4:
        raise ValueError(f"images must be [B, 3, H, W], got shape {tuple(images.shape)}")
    n = images.shape[0]
    layers = [layer] * n if isinstance(layer, str) else list(layer)
    unit_t = torch.as_tensor(units, dtype=torch.long).reshape(-1)
    if unit_t.numel() != n or len(layers) != n:
        raise ValueError(f"got {unit_t.numel()} units and {len(layers)} layers for {n} images")
    pos = None if positions is None else torch.as_tensor(positions, dtype=torch.long).reshape(n, 2)
    module = model.module if isinstance(model, LoadedModel) else model
    names = list(dict.fromkeys(layers))  # first-seen order
    resolved = {name: _resolve(model, name) for name in names}
    planner = _Planner(module, crop=crop, paths=[path for path, _ in resolved.values()])
    engines = {
        name: _Engine(planner, path, method, softmax=softmax, batch_size=batch_size)
        for name, (path, softmax) in resolved.items()
    }
    members = {name: torch.tensor([i for i, lay in enumerate(layers) if lay == name]) for name in names}
    with torch.inference_mode(False):  # written to below, outside inference mode
        canvas = torch.zeros(images.shape, dtype=images.dtype, device=images.device)
    if (
        crop
        and shared_forward is not False
        and _shared(engines, members, images, unit_t, pos, shared_forward, canvas)
    ):
        return canvas
    source: Tensor | None = None  # each image's first equal copy: whole-image pairs share its forward
    for name in names:
        engine, idx = engines[name], members[name]
        sub_units = unit_t[idx]
        if pos is None:
            rows, cols = engine.locate(images, idx, sub_units)
        else:
            rows, cols = pos[idx, 0], pos[idx, 1]
        plan = engine.plan(images)
        if plan.rows is None or plan.cols is None:
            if source is None:
                image_of, firsts = _distinct(images, exact=True)
                source = torch.tensor(firsts, dtype=torch.long)[image_of]
            image_idx = source[idx]
        else:
            image_idx = idx

        def paste(
            sel: Tensor, grads: Tensor, tops: Sequence[int], lefts: Sequence[int], idx: Tensor = idx
        ) -> None:
            _paste(canvas, idx[sel].tolist(), grads, tops, lefts)

        engine.run(images, image_idx, sub_units, rows, cols, paste)
    return canvas


def _paste(
    canvas: Tensor, pairs: Sequence[int], grads: Tensor, tops: Sequence[int], lefts: Sequence[int]
) -> None:
    h, w = grads.shape[-2:]
    if (h, w) == tuple(canvas.shape[-2:]):  # whole images: one scatter
        canvas[torch.as_tensor(pairs, dtype=torch.long, device=canvas.device)] = grads
        return
    for q, i in enumerate(pairs):
        canvas[i, :, tops[q] : tops[q] + h, lefts[q] : lefts[q] + w] = grads[q]


def _shared(
    engines: dict[str, _Engine],
    members: dict[str, Tensor],
    images: Tensor,
    units: Tensor,
    pos: Tensor | None,
    force: bool | None,
    canvas: Tensor,
) -> bool:
    """Reconstruct every pair into ``canvas`` on the shared-forward cone path (:class:`_Cone`), if it
    applies and pays (``force`` True: whenever it applies); False when it was not used.

    Equal images (see :func:`_distinct`) are forwarded once.
    """
    plans = {name: engine.plan(images) for name, engine in engines.items()}
    first = next(iter(engines.values()))
    cone = _Cone.create(first.model, list(plans.values()), first.method)
    if cone is None:
        return False
    n = images.shape[0]
    image_of, firsts = _distinct(images, exact=force is not None)
    if force is None and len(firsts) == n:
        return False  # nothing shared: a forward per image costs more than a crop per pair
    depths = [0] * n
    for name, idx in members.items():
        plan = plans[name]
        engines[name]._check_units(units[idx], plan)
        if pos is not None:
            engines[name]._check_positions(plan, pos[idx, 0], pos[idx, 1])
        assert plan.chain is not None
        for i in idx.tolist():
            depths[i] = len(plan.chain)
    if force is None:
        if pos is None:  # the cost of a cone at the map's centre
            rows_est, cols_est = [0] * n, [0] * n
            for name, idx in members.items():
                for i in idx.tolist():
                    rows_est[i], cols_est[i] = plans[name].out_shape[1] // 2, plans[name].out_shape[2] // 2
        else:
            rows_est, cols_est = pos[:, 0].tolist(), pos[:, 1].tolist()
        if not cone.pays(image_of, depths, rows_est, cols_est):
            return False
        count = len(firsts)
        image_of, firsts = _distinct(images, exact=True)  # the fingerprints' groups, checked
        if len(firsts) != count and not cone.pays(image_of, depths, rows_est, cols_est):
            return False
    distinct = (images[firsts] if len(firsts) < n else images).contiguous()
    # the planner's trace already forwarded image 0 through every chain (no ReLU override: the same
    # values, as the cone supports plain nn.ReLU modules only)
    x0, steps, _ = first.planner._trace(images)
    deepest = max(depths)
    traced = None
    if len(steps) >= deepest and all(steps[i].module is cone.chain[i] for i in range(deepest)):
        traced = steps if torch.equal(x0[0], distinct[0]) else None

    def paste(sel: Tensor, grads: Tensor, tops: Sequence[int], lefts: Sequence[int]) -> None:
        _paste(canvas, sel.tolist(), grads, tops, lefts)

    with torch.inference_mode(False):
        cone.run(
            distinct,
            image_of,
            depths,
            units,
            None if pos is None else pos[:, 0],
            None if pos is None else pos[:, 1],
            paste,
            first.batch_size,
            traced,
        )
    return True


def _distinct(images: Tensor, *, exact: bool) -> tuple[Tensor, list[int]]:
    """Each image's slot among the distinct images, and each slot's first image.

    Images are grouped by a fingerprint (a weighted sum of a sparse pixel sample: cheap); ``exact``
    then splits the groups into equal images (``torch.equal``; up to 0.3 ms a pair at 224 px).
    """
    n = images.shape[0]
    with torch.no_grad():
        sample = images[:, :, ::8, ::8].reshape(n, -1).double()
        probe = torch.linspace(1.0, 2.0, sample.shape[1], dtype=sample.dtype, device=sample.device)
        prints = (sample @ probe).tolist()
    buckets: dict[float, list[int]] = defaultdict(list)
    firsts: list[int] = []
    image_of = torch.empty(n, dtype=torch.long)
    for i in range(n):
        same = (j for j in buckets[prints[i]] if not exact or torch.equal(images[firsts[j]], images[i]))
        slot = next(same, None)
        if slot is None:
            slot = len(firsts)
            firsts.append(i)
            buckets[prints[i]].append(slot)
        image_of[i] = slot
    return image_of, firsts


def reconstruct_topk(
    loaded: LoadedModel,
    images_by_index: Callable[[int], Tensor],
    layer: LayerInfo,
    topk: Any,
    units: Sequence[int],
    *,
    method: str = "deconvnet",
    batch_size: int = DEFAULT_BATCH,
    device: torch.device | str = "cpu",
    image_size: int | None = None,
    max_cell: int = 96,
    progress: Callable[[int, int], None] | None = None,
    grayscale: bool = False,
    pixels: Callable[[int], Tensor] | None = None,
    scratch: list[Tensor] | None = None,
) -> np.ndarray | TileFile:
    """Reconstructions of each unit's top-k entries, as sprite tiles matching the patches.

    Each (unit, rank) entry of ``topk`` (duck-typed :class:`~sitegen.mine.LayerTopK`: ``images``,
    ``rows``, ``cols`` arrays ``[U, k]``, image -1 = empty) is reconstructed at its mined position,
    cut to the same receptive-field box as its patch (:func:`sitegen.analyses.patches.extract_patches`),
    contrast-normalized with :func:`to_display` and resized to the patch cell. Linear and prob
    layers (whole-image reconstructions) go image by image: a block of distinct images is loaded,
    each forwarded once, and all the pairs that reference them run as batched backwards.

    Args:
        loaded: the network.
        images_by_index: probe index -> un-normalized ``[3, H, W]`` image in [0, 1]; normalized here.
        layer: the layer.
        topk: its mined top-k table.
        units: which units (rows of ``topk``) to reconstruct.
        method: ``"deconvnet"``, ``"guided"`` or ``"gradient"``.
        batch_size: pairs per backward at full image size (see :func:`reconstruct`).
        device: where to compute.
        image_size: image side in pixels (default: the model's input size).
        max_cell: cell side cap, as for the patches.
        progress: called as ``progress(done_pairs, total_pairs)`` after each batch of pairs (well
            under a second apart at 224 px on a 2-core CPU).
        grayscale: the images are grey: show each reconstruction as one grey channel, the sum over
            the colour channels (:func:`to_display`).
        pixels: probe index -> the same image as uint8 ``[3, H, W]`` (``images_by_index`` is then
            not called): a block's images are copied as bytes and converted once, ``x.float() / 255``
            as the probe split does, so the values are the same bits (loading went from 0.5 to
            about 0.1 ms an image at 224 px: a third of conv2's reconstruction time before).
        scratch: a list the caller keeps between calls (e.g. the chunks of one layer): the image
            buffer is kept there and reused, as a new one page-faults on first touch (up to ~1 ms an
            image on a busy machine). Empty it to free the memory.

    Returns:
        uint8 ``[len(units), k, cell, cell, 3]``; empty entries are mid-grey. Past
        :data:`TILES_IN_RAM` bytes, a :class:`TileFile` with the same indexing by unit (``out[j]``).
    """
    path, softmax = _resolve(loaded, layer.module if layer.kind != "prob" else layer.name)
    size = int(image_size or loaded.input_size)
    table = np.asarray(topk.images)
    k = int(table.shape[1])
    cell = _crop.cell_size(_display_size(layer, size), max_cell)
    shape = (len(units), k, cell, cell, 3)
    # VGG-19's fc6 alone: 4096 units x 9 tiles of 96 px = 1 GB; past TILES_IN_RAM tiles go to a file
    out: Any = np.full(shape, 128, dtype=np.uint8) if math.prod(shape) <= TILES_IN_RAM else TileFile(shape)
    engine = _Engine(
        _Planner(loaded.module, crop=True, paths=[path]), path, method, softmax=softmax, batch_size=batch_size
    )
    dev = torch.device(device)
    sel_all = np.asarray([int(u) for u in units], dtype=np.int64)
    ent_j, ent_r = np.nonzero(table[sel_all] >= 0) if len(sel_all) else (np.zeros(0, int),) * 2
    total = len(ent_j)
    done = 0

    def counted(emit: Emit) -> Emit:
        def call(idx: Tensor, grads: Tensor, tops: Sequence[int], lefts: Sequence[int]) -> None:
            nonlocal done
            emit(idx, grads, tops, lefts)
            done += len(idx)
            if progress is not None:
                progress(done, total)

        return call

    # one block's images, normalized, in a buffer reused from block to block: a fresh tensor of
    # ~100 MB per block is mapped anew each time, and its page faults cost more than the copy
    # (profiled: 2 ms an image at 224 px on this 2-core VM, more than a conv2 pair's backward)
    buffer: list[Tensor] = [] if scratch is None else scratch

    def load(indices: Sequence[int] | np.ndarray, capacity: int) -> Tensor:
        if pixels is not None:
            return _normalize(_load_pixels(pixels, indices, capacity, dev, buffer))
        ims = [images_by_index(int(i)).to(dev, torch.float32) for i in indices]
        if (
            not buffer
            or buffer[0].shape[0] < len(ims)
            or buffer[0].shape[1:] != ims[0].shape
            or buffer[0].device != dev
        ):
            buffer[:] = [torch.empty((capacity, *ims[0].shape), dtype=torch.float32, device=dev)]
        batch = buffer[0][: len(ims)]
        if batch.device.type == "cpu":  # one thread: on busy cores each of torch's parallel copies
            # waits for a descheduled thread (145 images at 224 px: 10 ms this way, 0.1-1 s in torch)
            view = batch.numpy()
            for q, im in enumerate(ims):
                np.copyto(view[q], im.detach().numpy())
        else:
            torch.stack(ims, out=batch)
        return _normalize(batch)

    def _normalize(batch: Tensor) -> Tensor:
        # loaded.normalize, in place: (x - mean) / std
        return batch.sub_(batch.new_tensor(loaded.mean).view(1, -1, 1, 1)).div_(
            batch.new_tensor(loaded.std).view(1, -1, 1, 1)
        )

    if layer.kind in ("linear", "prob"):
        # by image: each distinct image is loaded and forwarded once for all the units that rank it
        ids = table[sel_all[ent_j], ent_r]
        distinct, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        order = np.argsort(-counts, kind="stable")  # images with as many pairs batch together
        for b0 in range(0, len(order), _IMAGE_BLOCK):
            members = order[b0 : b0 + _IMAGE_BLOCK]
            local = np.full(len(distinct), -1, dtype=np.int64)
            local[members] = np.arange(len(members))
            pick = np.nonzero(local[inverse] >= 0)[0]
            batch = load(distinct[members], min(_IMAGE_BLOCK, len(order)))
            zeros = torch.zeros(len(pick), dtype=torch.long)
            tile = functools.partial(_tile_whole, out, ent_j[pick], ent_r[pick], cell, size, grayscale)
            engine.run(
                batch,
                torch.from_numpy(local[inverse[pick]]),
                torch.from_numpy(sel_all[ent_j[pick]]),
                zeros,
                zeros,
                counted(tile),
            )
        return out

    # a block of units at a time keeps the distinct images in memory bounded (k images per unit)
    block = max(1, 256 // max(k, 1))
    capacity = min(block * k, len(np.unique(table[sel_all])))
    for b0 in range(0, len(units), block):
        sel = [int(u) for u in units[b0 : b0 + block]]
        img_idx = table[sel]
        entries = [(j, r) for j in range(len(sel)) for r in range(k) if img_idx[j, r] >= 0]
        if not entries:
            continue
        wanted = sorted({int(img_idx[j, r]) for j, r in entries})
        slot = {idx: s for s, idx in enumerate(wanted)}
        batch = load(wanted, capacity)
        image_of = torch.tensor([slot[int(img_idx[j, r])] for j, r in entries])
        unit_t = torch.tensor([sel[j] for j, _ in entries])
        rows_np, cols_np = np.asarray(topk.rows)[sel], np.asarray(topk.cols)[sel]
        rows = torch.tensor([int(rows_np[j, r]) for j, r in entries])
        cols = torch.tensor([int(cols_np[j, r]) for j, r in entries])
        if bool((rows < 0).any()):  # no mined position: recover the argmax
            r2, c2 = engine.locate(batch, image_of, unit_t)
            rows = torch.where(rows < 0, r2, rows)
            cols = torch.where(cols < 0, c2, cols)
        boxes = [_display_box(layer, int(rows[e]), int(cols[e])) for e in range(len(entries))]
        placed = [(b0 + j, r) for j, r in entries]  # rows of out (an array or a TileFile)
        tile = functools.partial(_tile_into, out, placed, boxes, cell, grayscale)
        engine.run(batch, image_of, unit_t, rows, cols, counted(tile))
    return out


def _load_pixels(
    pixels: Callable[[int], Tensor],
    indices: Sequence[int] | np.ndarray,
    capacity: int,
    dev: torch.device,
    buffer: list[Tensor],
) -> Tensor:
    """A block of probe images as float32 in [0, 1], from their uint8 pixels, in a buffer reused from
    block to block (see ``reconstruct_topk``'s ``load``).

    Each image's bytes are converted straight into its slot, on one thread (numpy: torch's parallel
    copies wait for descheduled threads on busy cores), no float copy in between: ``x / 255`` in
    float32, the same bits as the probe split's ``x.float().div_(255)`` (IEEE division; a test checks
    all 256 values). On a GPU the bytes travel and the device converts.
    """
    first = pixels(int(indices[0]))
    n, shape = len(indices), tuple(first.shape)
    if not buffer or buffer[0].shape[0] < n or tuple(buffer[0].shape[1:]) != shape or buffer[0].device != dev:
        buffer[:] = [torch.empty((capacity, *shape), dtype=torch.float32, device=dev)]
    batch = buffer[0][:n]
    ims = (first if q == 0 else pixels(int(i)) for q, i in enumerate(indices))
    if batch.device.type == "cpu":
        view = batch.numpy()
        for q, im in enumerate(ims):
            np.divide(np.asarray(im), np.float32(255), out=view[q], dtype=np.float32)
    else:
        batch.copy_(torch.stack([torch.as_tensor(im) for im in ims]).to(dev)).div_(255)
    return batch


def to_display(rec: np.ndarray, peak: float | None = None, *, grayscale: bool = False) -> np.ndarray:
    """A reconstruction ``[C, h, w]`` as uint8 ``[h, w, 3]``, contrast-stretched around grey.

    Zero (no contribution, and everything outside the receptive field) is mid-grey; positive and
    negative signal brighten and darken each colour channel, scaled symmetrically by ``peak``:
    ``x / (2 * peak) + 0.5``, clipped. The default ``peak`` is robust (:func:`display_peak`: the
    99.5th percentile of the non-zero magnitudes), so the brightest 0.5 % of pixels saturate instead
    of one extreme pixel squeezing the rest into flat grey (issue 14: reconstructions read as grey
    noise, values 93-169, on a projector; DeepVis and Zeiler & Fergus's figures stretch likewise).

    ``grayscale``: the input was grey (R = G = B), so the reconstruction is shown as one grey channel,
    the sum over the colour channels: the gradient with respect to a grey image. Its channels apart
    are differences the network never saw, and show as false colour.
    """
    if grayscale and rec.shape[0] > 1:
        rec = rec.sum(axis=0, keepdims=True)
    if peak is None:
        peak = display_peak(rec)
    scaled = rec / (2 * peak) + 0.5 if peak > 0 else np.full_like(rec, 0.5)
    out = np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out.copy()


#: Memory for the retained forward graph of whole-image pairs (images per batch: see _Engine).
GRAPH_BYTES = 160 << 20

#: Bytes of tiles :func:`reconstruct_topk` keeps in RAM; larger sets go to a :class:`TileFile`.
TILES_IN_RAM = 128 << 20


class TileFile:
    """uint8 tiles ``[U, k, cell, cell, 3]`` in an anonymous temporary file instead of RAM.

    Written tile by tile (``out[j, r] = tile``, one pwrite), read back unit by unit (``out[j]``):
    the build turns each unit into its sprite and moves on, so RAM stays flat however wide the
    layer (issue 13: peak RSS flat in the probe set and the layer width). Unwritten tiles read
    back mid-grey, as empty slots of the array form.
    """

    def __init__(self, shape: tuple[int, int, int, int, int]) -> None:
        self.shape = shape
        self._tile = shape[2] * shape[3] * shape[4]
        self._file = tempfile.TemporaryFile(prefix="sitegen-tiles-")
        self._written = np.zeros(shape[:2], dtype=bool)

    def __setitem__(self, key: tuple[int, int], tile: np.ndarray) -> None:
        j, r = (int(v) for v in key)
        data = np.ascontiguousarray(tile, dtype=np.uint8)
        os.pwrite(self._file.fileno(), data.tobytes(), (j * self.shape[1] + r) * self._tile)
        self._written[j, r] = True

    def __getitem__(self, j: int) -> np.ndarray:
        k = self.shape[1]
        raw = os.pread(self._file.fileno(), k * self._tile, int(j) * k * self._tile)
        out = np.frombuffer(raw.ljust(k * self._tile, b"\x80"), dtype=np.uint8).reshape(self.shape[1:]).copy()
        out[~self._written[j]] = 128
        return out

    def __len__(self) -> int:
        return self.shape[0]


#: Share of a reconstruction's non-zero magnitudes kept below saturation by :func:`to_display`.
DISPLAY_PERCENTILE = 99.5


def display_peak(rec: np.ndarray) -> float:
    """The magnitude :func:`to_display` maps to black/white: a high percentile of the non-zero ``|x|``.

    Non-zero only: a receptive-field crop is zero outside the field, and a sparse reconstruction is
    zero almost everywhere; those zeros would pull a plain percentile down to nothing.
    """
    mags = np.abs(rec[rec != 0])
    return float(np.percentile(mags, DISPLAY_PERCENTILE)) if mags.size else 0.0


def display_cell(rec: Tensor | np.ndarray, cell: int, *, grayscale: bool = False) -> np.ndarray:
    """A reconstruction ``[C, h, w]`` shrunk to its ``cell`` (area average), then :func:`to_display`.

    The stretch is computed on the pixels shown, after the resize (a 224 px whole-image
    reconstruction is shown in a 96 px cell). Pillow's float BOX filter does the resize: 0.1 ms a
    channel where torch's adaptive pooling of one small tensor took 3.5 ms (thread start-up).
    """
    x = rec.detach().float().cpu().numpy() if isinstance(rec, Tensor) else np.asarray(rec, np.float32)
    if grayscale and x.shape[0] > 1:
        x = x.sum(axis=0, keepdims=True)
    if tuple(x.shape[-2:]) != (cell, cell):
        box = Image.Resampling.BOX if min(x.shape[-2:]) >= cell else Image.Resampling.NEAREST
        x = np.stack([np.asarray(Image.fromarray(c, mode="F").resize((cell, cell), box)) for c in x])
    return to_display(x)


# --- internals ------------------------------------------------------------------------------------


def _resolve(model: nn.Module | LoadedModel, layer: str) -> tuple[str, bool]:
    """(module path, softmax?) for a layer name or module path."""
    if isinstance(model, LoadedModel):
        try:
            info = model.layer(layer)
        except KeyError:
            names = ", ".join(i.name for i in model.layers)
            raise ModelError(f"no layer {layer!r} in {model.arch}; layers: {names}") from None
        _hooks.get_module(model.module, info.module)
        return info.module, info.kind == "prob"
    _hooks.get_module(model, layer)
    return layer, False


def _display_size(layer: LayerInfo, image_size: int) -> int:
    return image_size if layer.kind in ("linear", "prob") else int(layer.rf_size)


def _display_box(layer: LayerInfo, row: int, col: int) -> tuple[int, int, int, int]:
    """The patch's box: the layer table's receptive field around (row, col), unclipped."""
    return unit_box(RF(layer.rf_size, layer.rf_stride, layer.rf_offset), row, col)


def _tile_into(
    out: Any,
    entries: Sequence[tuple[int, int]],
    boxes: Sequence[tuple[int, int, int, int]],
    cell: int,
    grayscale: bool,
    idx: Tensor,
    grads: Tensor,
    tops: Sequence[int],
    lefts: Sequence[int],
) -> None:
    """Emit callback of :func:`reconstruct_topk`: pair ``e`` is entry ``(j, r)``, drawn into ``out[j, r]``."""
    arr = grads.detach().float().cpu().numpy()
    for q, e in enumerate(idx.tolist()):
        j, r = entries[e]
        shown = _display_box_of(arr[q], tops[q], lefts[q], boxes[e])
        out[j, r] = display_cell(shown, cell, grayscale=grayscale)


def _tile_whole(
    out: Any,
    js: np.ndarray,
    rs: np.ndarray,
    cell: int,
    size: int,
    grayscale: bool,
    idx: Tensor,
    grads: Tensor,
    tops: Sequence[int],
    lefts: Sequence[int],
) -> None:
    """Emit callback for whole-image pairs: pair ``e`` is drawn into ``out[js[e], rs[e]]``."""
    if tuple(grads.shape[-2:]) != (size, size):  # images of another size: cut to the display box
        entries = list(zip(js.tolist(), rs.tolist(), strict=True))
        box = [(0, 0, size, size)] * len(entries)
        _tile_into(out, entries, box, cell, grayscale, idx, grads, tops, lefts)
        return
    arr = grads.detach().float().cpu().numpy()
    for q, e in enumerate(idx.tolist()):
        out[js[e], rs[e]] = display_cell(arr[q], cell, grayscale=grayscale)


def _display_box_of(rec: np.ndarray, top: int, left: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Cut the (display) box out of a reconstruction crop placed at (top, left); zero outside."""
    bt, bl, bb, br = box
    h, w = rec.shape[1:]
    if (top, left, top + h, left + w) == box:
        return rec
    canvas = np.zeros((rec.shape[0], bb - bt, br - bl), dtype=np.float32)
    t, lft, b, r = max(bt, top), max(bl, left), min(bb, top + h), min(br, left + w)
    if t < b and lft < r:
        canvas[:, t - bt : b - bt, lft - bl : r - bl] = rec[:, t - top : b - top, lft - left : r - left]
    return canvas


@dataclass(frozen=True, slots=True)
class _Plan:
    """How pairs of one layer are computed: on crops of a chain (``spatial`` modules and spans) or whole."""

    out_shape: tuple[int, ...]
    spatial: tuple[nn.Module, ...] | None = None
    rows: _crop.Span | None = None
    cols: _crop.Span | None = None
    # every leaf module of the chain, input to layer, and each one's input (height, width)
    chain: tuple[nn.Module, ...] | None = None
    sizes: tuple[tuple[int, int], ...] | None = None


class _Planner:
    """Plans for the layers of one model from ONE traced forward per input size (shared by layers).

    The trace stops once every module in ``paths`` has run (default: runs the whole model).
    """

    def __init__(self, model: nn.Module, *, crop: bool, paths: Sequence[str] = ()) -> None:
        self.model = model
        self.crop = crop
        self.stops = [_hooks.get_module(model, p) for p in dict.fromkeys(paths)]
        self._traces: dict[tuple[int, int], tuple[Tensor, list[_hooks.Step], dict[str, Tensor]]] = {}
        self._plans: dict[tuple[str, bool, int, int], _Plan] = {}

    def plan(self, path: str, softmax: bool, images: Tensor) -> _Plan:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        key = (path, softmax, *size)
        if key not in self._plans:
            x, steps, outputs = self._trace(images)
            if path not in outputs:  # not among the modules the trace stopped after: trace it all
                self.stops = []
                del self._traces[size]
                x, steps, outputs = self._trace(images)
            out = outputs[path]
            if not isinstance(out, Tensor):
                raise ModelError(f"the output of module {path!r} is not a single tensor")
            shape = tuple(out.shape[1:])
            spatial = None
            if self.crop and out.dim() == 4 and not softmax:
                spatial = _chain(steps, x, out)
            if spatial is None:
                self._plans[key] = _Plan(shape)
            else:
                rows, cols = _crop.chain_spans(spatial)
                convs = tuple(m for m in spatial if isinstance(m, _crop.SPATIAL))
                sizes = tuple(
                    (int(step.inputs[0].shape[-2]), int(step.inputs[0].shape[-1]))
                    for step in steps[: len(spatial)]
                )
                self._plans[key] = _Plan(shape, convs, rows, cols, tuple(spatial), sizes)
        return self._plans[key]

    def _trace(self, images: Tensor) -> tuple[Tensor, list[_hooks.Step], dict[str, Tensor]]:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        if size not in self._traces:
            with torch.inference_mode(False):  # a normal tensor: the chain check reads version counters
                x = images[:1].detach().clone()
            with (
                torch.inference_mode(False),
                torch.no_grad(),
                _hooks.truncated(self.model, None, "gradient", trace=True) as fwd,
                _hooks.stop_after(self.stops),
            ):
                fwd.run(x)
                self._traces[size] = (x, list(fwd.steps), dict(fwd.outputs))
        return self._traces[size]


class _Engine:
    """Batched, receptive-field-cropped reconstructions for one layer of one model."""

    def __init__(self, planner: _Planner, path: str, method: str, *, softmax: bool, batch_size: int) -> None:
        if method not in _hooks.METHODS:
            raise ValueError(f"method must be one of {list(_hooks.METHODS)}, got {method!r}")
        self.planner = planner
        self.model = planner.model
        self.target = _hooks.get_module(self.model, path)
        self.path = path
        self.method = method
        self.softmax = softmax
        self.batch_size = max(1, int(batch_size))

    def _output(self, fwd: _hooks.Truncated, x: Tensor) -> Tensor:
        out = fwd(x)
        return torch.softmax(out, dim=1) if self.softmax else out

    def plan(self, images: Tensor) -> _Plan:
        return self.planner.plan(self.path, self.softmax, images)

    def _images_per_graph(self, images: Tensor) -> int:
        """Images whose retained forward graph fits :data:`GRAPH_BYTES` (at least one).

        A retained graph holds every activation up to the layer, the tensors saved for backward and
        the gradients in flight: about four float32 copies of the traced forward's outputs. alexnet at
        224 px: ~9 MB an image (64 images held ~690 MB, the seed-scale peak); VGG-19: ~240 MB.
        """
        _x, steps, _ = self.planner._trace(images)
        numel = sum(s.output.numel() for s in steps if isinstance(s.output, Tensor))
        return max(1, GRAPH_BYTES // max(1, 16 * numel))

    def locate(self, images: Tensor, image_of: Tensor, units: Tensor) -> tuple[Tensor, Tensor]:
        """Each pair's argmax (row, col) in its unit's map (first maximum, row-major); 0 for 2-D outputs."""
        plan = self.plan(images)
        rows = torch.zeros(len(image_of), dtype=torch.long)
        cols = torch.zeros(len(image_of), dtype=torch.long)
        if len(plan.out_shape) != 3:
            return rows, cols
        self._check_units(units, plan)
        width = plan.out_shape[2]
        with torch.no_grad(), _hooks.truncated(self.model, self.target, "gradient") as fwd:
            for s in range(0, images.shape[0], self.batch_size):
                pick = ((image_of >= s) & (image_of < s + self.batch_size)).nonzero().flatten()
                if len(pick) == 0:
                    continue
                out = self._output(fwd, images[s : s + self.batch_size])
                maps = out[image_of[pick] - s, units[pick].to(out.device)].flatten(1)
                flat = maps.argmax(dim=1).cpu()
                rows[pick], cols[pick] = flat // width, flat % width
        return rows, cols

    def _check_units(self, units: Tensor, plan: _Plan) -> None:
        count = plan.out_shape[0]
        if len(units) and (int(units.min()) < 0 or int(units.max()) >= count):
            raise ModelError(
                f"unit out of range for layer {self.path!r} with {count} units: {units.tolist()}"
            )

    def _check_positions(self, plan: _Plan, rows: Tensor, cols: Tensor) -> None:
        bad = (rows < 0) | (rows >= plan.out_shape[1]) | (cols < 0) | (cols >= plan.out_shape[2])
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ModelError(
                f"position ({int(rows[i])}, {int(cols[i])}) outside layer {self.path!r}'s "
                f"{plan.out_shape[1]}x{plan.out_shape[2]} map"
            )

    def run(
        self, images: Tensor, image_of: Tensor, units: Tensor, rows: Tensor, cols: Tensor, emit: Emit
    ) -> None:
        """Reconstruct pair ``i``: unit ``units[i]`` of ``images[image_of[i]]`` at ``(rows[i], cols[i])``.

        Calls ``emit(pair indices, grads [n, 3, h, w], tops, lefts)`` per chunk: the gradient w.r.t.
        the input crop whose top-left pixel is ``(tops[q], lefts[q])``; zero elsewhere.
        """
        plan = self.plan(images)
        self._check_units(units, plan)
        height, width = images.shape[-2:]
        spatial = len(plan.out_shape) == 3
        if spatial:
            self._check_positions(plan, rows, cols)
        if plan.rows is None or plan.cols is None:
            self._whole(images, image_of, units, rows, cols, emit)
            return
        # group pairs by crop: (row mode, col mode, height, width) -> [(pair, top, left, row', col')]
        groups: dict[tuple[bool, bool, int, int], list[tuple[int, int, int, int, int]]] = defaultdict(list)
        if plan.rows is not None and plan.cols is not None:
            quantum_r = self._quantum(plan.rows, len(image_of))
            quantum_c = self._quantum(plan.cols, len(image_of))
        for i in range(len(image_of)):
            r, c = int(rows[i]), int(cols[i])
            if plan.rows is not None and plan.cols is not None:
                ar = _crop.axis_crop(plan.rows, r, height, quantum_r)
                ac = _crop.axis_crop(plan.cols, c, width, quantum_c)
                groups[(ar.valid, ac.valid, ar.length, ac.length)].append(
                    (i, ar.start, ac.start, ar.index, ac.index)
                )
            else:
                groups[(False, False, height, width)].append((i, 0, 0, r, c))
        full = height * width
        # autograd even when the caller runs under no_grad / inference_mode
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            _hooks.truncated(self.model, self.target, self.method) as fwd,
            _hooks.phase_backward(plan.spatial or ()),
        ):
            for (valid_r, valid_c, h, w), members in sorted(groups.items()):
                chunk = max(1, min(_MAX_CHUNK, self.batch_size * full // (h * w)))
                with _hooks.padding_off(plan.spatial or (), rows=valid_r, cols=valid_c):
                    for s in range(0, len(members), chunk):
                        part = members[s : s + chunk]
                        self._backward(fwd, images, image_of, units, part, h, w, spatial, emit)

    def _whole(
        self, images: Tensor, image_of: Tensor, units: Tensor, rows: Tensor, cols: Tensor, emit: Emit
    ) -> None:
        """Pairs on whole images: each image forwarded once, many pairs per batched backward.

        Images are forwarded up to ``batch_size`` at a time (grouped by :func:`_schedule`) and the graph
        is retained; backward round ``r`` seeds the ``r``-th pair of every image of the batch at once
        (its unit's value at its position, zero elsewhere): one autograd backward serves up to
        ``batch_size`` pairs. That is the bare batched backward of shared/PERFORMANCE.md, plus one
        forward per image. (A vmapped backward, ``is_grads_batched``, was no faster on 2 cores and
        needs vmap rules for the ReLU overrides.) Strided convs compute their input gradient by
        phases, as on the crop path (equal up to float rounding, and faster than oneDNN's).
        """
        n = len(image_of)
        if n == 0:
            return
        image_of = image_of.to(torch.long).cpu()
        counts = torch.bincount(image_of, minlength=images.shape[0])
        # pairs in image order; image i's pairs are by_image[first[i] : first[i] + counts[i]]
        by_image = torch.argsort(image_of, stable=True)
        first = torch.cumsum(counts, 0) - counts
        # the seed's flat index into the layer's output (channel-major, then row, col)
        plan = self.plan(images)
        flat = units.to(torch.long).cpu()
        if len(plan.out_shape) == 3:
            h, w = plan.out_shape[1:]
            flat = (flat * h + rows.to(torch.long).cpu()) * w + cols.to(torch.long).cpu()
        strided = [m for m in self.model.modules() if _hooks._phase_ok(m)]
        batch = min(self.batch_size, self._images_per_graph(images))
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            _hooks.truncated(self.model, self.target, self.method) as fwd,
            _hooks.phase_backward(strided),
        ):
            for members, lo, take in _schedule(counts, batch):
                rounds = int(take.max())
                step = torch.arange(rounds)
                valid = step < take[:, None]  # [image, round]
                # pair of image j in round r (clamped where the image has none left: masked by valid)
                pairs = by_image[(first[members] + lo)[:, None] + torch.minimum(step, take[:, None] - 1)]
                # contiguous (see _backward); a fresh leaf, even when images are inference tensors
                x = images[members.to(images.device)].contiguous().detach().requires_grad_(True)
                out = self._output(fwd, x)
                values = out.detach().reshape(len(members), -1)
                for r in range(rounds):
                    loc = valid[:, r].nonzero().flatten()
                    sel = pairs[loc, r]
                    at = (loc.to(out.device), flat[sel].to(out.device))
                    seed = torch.zeros_like(values)
                    seed[at] = values[at]
                    (grad,) = torch.autograd.grad(out, x, seed.view_as(out), retain_graph=r < rounds - 1)
                    if len(sel) < len(members):
                        grad = grad[at[0]]
                    emit(sel, grad, [0] * len(sel), [0] * len(sel))

    @staticmethod
    def _quantum(span: _crop.Span, pairs: int) -> int:
        """Border-crop length step: ~size / 3 (a multiple of the stride) when there are many pairs.

        Rounding border crops up to a few shared lengths lets them batch (oneDNN is far more efficient
        on a batch than one crop at a time, and builds one kernel per shape); with few pairs there is
        nothing to batch and the smallest crops win.
        """
        if pairs < _BUCKET_MIN_PAIRS:
            return 1
        return span.stride * max(1, -(-span.size // (3 * span.stride)))

    def _backward(
        self,
        fwd: _hooks.Truncated,
        images: Tensor,
        image_of: Tensor,
        units: Tensor,
        part: list[tuple[int, int, int, int, int]],
        h: int,
        w: int,
        spatial: bool,
        emit: Emit,
    ) -> None:
        idx = torch.tensor([p[0] for p in part])
        tops = [p[1] for p in part]
        lefts = [p[2] for p in part]
        src = image_of[idx].tolist()
        x = torch.stack(
            [images[src[q], :, tops[q] : tops[q] + h, lefts[q] : lefts[q] + w] for q in range(len(part))]
        )
        # contiguous, not channels_last (5-10 % faster here): on a channels_last map max-pool breaks ties
        # (windows of ReLU zeros) differently, and deconvnet routes its signal through those switches,
        # so the result would no longer match the model's usual (contiguous) forward and captum.
        x = x.contiguous().detach().requires_grad_(True)
        out = self._output(fwd, x)
        n = torch.arange(len(part), device=out.device)
        u = units[idx].to(out.device)
        seed = torch.zeros_like(out)
        if spatial:
            r = torch.tensor([p[3] for p in part], device=out.device)
            c = torch.tensor([p[4] for p in part], device=out.device)
            seed[n, u, r, c] = out.detach()[n, u, r, c]
        else:
            seed[n, u] = out.detach()[n, u]
        (grad,) = torch.autograd.grad(out, x, seed)
        emit(idx, grad, tops, lefts)


def _schedule(
    counts: Tensor, batch: int, forward_cost: float = 1.0
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Batches of whole-image backward rounds: (images, first pair rank, pairs taken) per batch.

    Image ``i`` has ``counts[i]`` pairs. A batch of up to ``batch`` images is forwarded once and runs
    ``max(taken)`` backward rounds, each costing a full batch however few of its images still have a
    pair: the images with the most pairs left go together, and the rounds are capped where an idle
    image slot would cost more than forwarding the images with more pairs again later
    (``forward_cost``: a forward per image, in backward slots; alexnet at 224 px: about 0.8).
    """
    pool = [(int(c), i, 0) for i, c in enumerate(counts.tolist()) if c > 0]
    while pool:
        pool.sort(key=lambda t: -t[0])  # stable: image order among equal counts
        top, pool = pool[:batch], pool[batch:]
        left = [c for c, _, _ in top]
        cost = {
            r: sum(r - min(c, r) for c in left) + forward_cost * sum(c > r for c in left) for r in set(left)
        }
        rounds = min(cost, key=lambda r: (cost[r], -r))
        yield (
            torch.tensor([i for _, i, _ in top]),
            torch.tensor([lo for _, _, lo in top]),
            torch.tensor([min(c, rounds) for c in left]),
        )
        pool.extend((c - rounds, i, lo + rounds) for c, i, lo in top if c > rounds)


def _chain(steps: Sequence[_hooks.Step], x: Tensor, out: Tensor) -> list[nn.Module] | None:
    """The leaf modules from the input to ``out`` when they form a croppable chain, else None.

    A chain: each leaf's only input is the previous leaf's output object, unmodified since (no
    functional op in between), the last one's output is ``out``, and every leaf is a conv/pool with
    zero padding or a pointwise module (BatchNorm and Dropout in eval mode only).
    """
    end = next((i for i, step in enumerate(steps) if step.output is out), None)
    if end is None:
        return None
    prev: Any = x
    version = x._version
    modules: list[nn.Module] = []
    for step in steps[: end + 1]:
        if len(step.inputs) != 1 or step.inputs[0] is not prev or step.input_versions[0] != version:
            return None
        m = step.module
        if isinstance(m, _crop.SPATIAL):
            if _crop.module_geometry(m) is None:
                return None
        elif isinstance(m, _crop.POINTWISE):
            if m.training and isinstance(m, nn.BatchNorm2d | nn.Dropout | nn.Dropout2d | nn.AlphaDropout):
                return None
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is None:
                return None
        else:
            return None
        if not isinstance(step.output, Tensor):
            return None
        prev, version = step.output, step.output_version
        modules.append(m)
    return modules


# --- one shared forward per image, backward cropped to the receptive-field cone ------------------


@dataclass(frozen=True, slots=True)
class _Window:
    """The signal's extent at one chain module in a cone backward (same for every pair of a group).

    ``height x width`` at the module's output; for a conv/pool, ``clip_top``/``clip_left`` rows/cols
    of its transposed output fall outside the input map (in its padding) and ``in_height x in_width``
    remain.
    """

    height: int
    width: int
    clip_top: int = 0
    clip_left: int = 0
    in_height: int = 0
    in_width: int = 0


@dataclass(slots=True)
class _ConePair:
    index: int  # the pair's position in the caller's order
    image: int  # its image among the forwarded ones
    unit: int
    shapes: tuple[_Window, ...]  # from the layer's module down to the first (see _Cone.windows)
    tops: list[int]  # the window's top-left at each chain module's output (and, last, at the input)
    lefts: list[int]


class _Cone:
    """Reconstructions of many units from ONE forward per image, each backward cropped to its cone.

    The forward (up to the deepest layer asked for, contiguous like the crop path's, so max-pools
    break ties alike; for the first image the planner's traced forward is reused) records what the
    backward rules read: max-pool switches (and ReLU masks for guided and gradient); no autograd
    graph is built. Each pair's backward then runs explicitly, module by module, on the window of each
    map that the unit's receptive-field cone covers (a 1x1 seed at the layer grows by the kernel at
    each conv/pool, clipped to the map): convolutions transposed, max-pools routed by the recorded
    switches, ReLUs by the method's rule. Nothing outside the cone is computed and nothing is
    forwarded twice: when many units share an image (one image, 3 channels of each of VGG16's 13 conv
    layers), this does about half the work of forwarding a crop per unit. Pairs of one layer whose
    windows have the same shapes and clips at every module (interior units) are batched. A stride-1
    conv's transposed conv runs as oneDNN's forward conv with the flipped kernel, channels_last
    (faster than ``conv_transpose2d`` on 2 cores); a strided one by phases, as on the crop path.

    Supports chains of ``nn.Conv2d`` (zero padding), ``nn.MaxPool2d``, ``nn.ReLU``, eval-mode
    ``nn.BatchNorm2d`` and identities (``nn.Identity``, eval-mode dropout), those exact types (a
    subclass may compute something else); :meth:`create` returns None for anything else, and
    :func:`reconstruct` then uses the crop path.
    """

    def __init__(
        self, model: nn.Module, chain: Sequence[nn.Module], sizes: Sequence[tuple[int, int]], method: str
    ):
        self.model = model
        self.chain = list(chain)
        self.sizes = list(sizes)
        self.method = method
        self.geometry = [_crop.module_geometry(m) for m in self.chain]
        self.bn_scale: dict[int, Tensor] = {}
        self.flipped: dict[int, Tensor | None] = {}
        for i, m in enumerate(self.chain):
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_var is not None
                scale = torch.rsqrt(m.running_var.detach() + m.eps)
                self.bn_scale[i] = scale if m.weight is None else m.weight.detach() * scale

    @staticmethod
    def create(model: nn.Module, plans: Sequence[_Plan], method: str) -> _Cone | None:
        """A cone engine for the layers of ``plans``, or None where a layer is not a supported chain."""
        chains = [p.chain for p in plans]
        if any(c is None for c in chains) or not chains:
            return None
        longest = max(plans, key=lambda p: len(p.chain or ()))
        assert longest.chain is not None and longest.sizes is not None
        for c in chains:  # all from one trace: prefixes of the longest
            assert c is not None
            if any(a is not b for a, b in zip(c, longest.chain, strict=False)):
                return None
        if not all(_cone_supported(m) for m in longest.chain):
            return None
        return _Cone(model, longest.chain, longest.sizes, method)

    # -- geometry and cost -------------------------------------------------------------------------

    def windows(self, depth: int, row: int, col: int) -> tuple[tuple[_Window, ...], list[int], list[int]]:
        """Window shapes (from module ``depth - 1`` down to 0) and tops/lefts for a unit at (row, col)."""
        top, left, height, width = row, col, 1, 1
        shapes: list[_Window] = []
        tops, lefts = [top], [left]
        for i in range(depth - 1, -1, -1):
            geometry = self.geometry[i]
            if geometry is None:
                shapes.append(_Window(height, width))
                tops.append(top)
                lefts.append(left)
                continue
            (kh, kw), (sh, sw), (ph, pw) = geometry
            in_h, in_w = self.sizes[i]
            a, b = top * sh - ph, left * sw - pw
            full_h, full_w = (height - 1) * sh + kh, (width - 1) * sw + kw
            t0, l0 = max(0, a), max(0, b)
            t1, l1 = min(in_h, a + full_h), min(in_w, b + full_w)
            shapes.append(_Window(height, width, t0 - a, l0 - b, t1 - t0, l1 - l0))
            top, left, height, width = t0, l0, t1 - t0, l1 - l0
            tops.append(top)
            lefts.append(left)
        return tuple(shapes), tops, lefts

    def macs(self, depth: int, row: int | None = None, col: int | None = None) -> int:
        """Multiply-adds of the convs: the whole forward to ``depth`` (row None), or one cone backward."""
        if row is None or col is None:
            total = 0
            for i in range(depth):
                m = self.chain[i]
                if isinstance(m, nn.Conv2d):
                    oh, ow = self._conv_out(i)
                    total += oh * ow * _conv_macs(m)
            return total
        shapes, _, _ = self.windows(depth, row, col)
        total = 0
        for j, i in enumerate(range(depth - 1, -1, -1)):
            m = self.chain[i]
            if isinstance(m, nn.Conv2d):
                total += shapes[j].height * shapes[j].width * _conv_macs(m)
        return total

    def _conv_out(self, i: int) -> tuple[int, int]:
        geometry = self.geometry[i]
        assert geometry is not None
        (kh, kw), (sh, sw), (ph, pw) = geometry
        h, w = self.sizes[i]
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def pays(self, image_of: Tensor, depths: Sequence[int], rows: Sequence[int], cols: Sequence[int]) -> bool:
        """Whether one forward per image plus the cone backwards beat a crop forward per pair.

        Both paths compute the cone backward; a crop forward costs at least the cone again, the shared
        path one whole forward per image (conv multiply-adds).
        """
        deepest: dict[int, int] = {}
        for img, d in zip(image_of.tolist(), depths, strict=True):
            deepest[img] = max(deepest.get(img, 0), d)
        forward = sum(self.macs(d) for d in deepest.values())
        cones = sum(self.macs(d, r, c) for d, r, c in zip(depths, rows, cols, strict=True))
        return forward < cones

    def run(
        self,
        images: Tensor,
        image_of: Tensor,
        depths: Sequence[int],
        units: Tensor,
        rows: Tensor | None,
        cols: Tensor | None,
        emit: Emit,
        batch_size: int,
        traced: Sequence[_hooks.Step] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Reconstruct pair ``i``: unit ``units[i]`` of chain module ``depths[i] - 1`` at (rows, cols)[i].

        ``images`` are forwarded ``batch_size`` at a time; ``traced``: the leaf calls of a forward of
        ``images[0]`` through the whole chain (the planner's trace), which then is not forwarded again.
        ``rows``/``cols`` None: each unit's argmax (first maximum, row-major). Calls ``emit`` as
        :meth:`_Engine.run` does; returns the positions.
        """
        n = len(image_of)
        out_rows = torch.zeros(n, dtype=torch.long) if rows is None else rows.clone()
        out_cols = torch.zeros(n, dtype=torch.long) if cols is None else cols.clone()
        height, width = images.shape[-2:]
        count = images.shape[0]
        starts = (
            [0, *range(1, count, batch_size)] if traced is not None else list(range(0, count, batch_size))
        )
        for k, s in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else count
            chunk = ((image_of >= s) & (image_of < end)).nonzero().flatten().tolist()
            if not chunk:
                continue
            depth = max(depths[i] for i in chunk)
            keep = {depths[i] - 1 for i in chunk}
            if traced is not None and s == 0:
                records, outputs = self._from_trace(traced, depth, keep)
            else:
                records, outputs = self.forward(images[s:end], depth, keep)
            groups: dict[int, list[_ConePair]] = defaultdict(list)
            for i in chunk:
                img, unit, d = int(image_of[i]) - s, int(units[i]), depths[i]
                if rows is None or cols is None:
                    out = outputs[d - 1]
                    flat = int(out[img, unit].flatten().argmax())
                    out_rows[i], out_cols[i] = flat // out.shape[-1], flat % out.shape[-1]
                shapes, tops, lefts = self.windows(d, int(out_rows[i]), int(out_cols[i]))
                groups[d].append(_ConePair(i, img, unit, shapes, tops, lefts))
            for d, members in groups.items():
                area = max(_area(p.shapes[-1]) for p in members)
                step = max(1, min(_MAX_CHUNK, batch_size * height * width // area))
                for b in range(0, len(members), step):
                    self.backward(records, outputs[d - 1], d, members[b : b + step], emit)
        return out_rows, out_cols

    # -- forward -----------------------------------------------------------------------------------

    def _from_trace(
        self, steps: Sequence[_hooks.Step], depth: int, keep: set[int]
    ) -> tuple[list[Tensor | None], dict[int, Tensor]]:
        """What :meth:`forward` records, from a traced forward of one image (no module run again)."""
        records: list[Tensor | None] = []
        outputs: dict[int, Tensor] = {}
        for i in range(depth):
            m, step = self.chain[i], steps[i]
            assert step.module is m
            if i in keep:
                outputs[i] = step.output
            if isinstance(m, nn.MaxPool2d):
                with torch.no_grad():
                    records.append(_switches(m, step.inputs[0])[1])
            elif self.method != "deconvnet" and isinstance(m, nn.ReLU):
                records.append(step.output)
            else:
                records.append(None)
        return records, outputs

    def forward(self, x: Tensor, depth: int, keep: set[int]) -> tuple[list[Tensor | None], dict[int, Tensor]]:
        """Run ``x`` through the first ``depth`` chain modules; per module what the backward reads.

        Records, entry ``i``: a max-pool's switches (flat indices into its input map), a ReLU's output
        for guided and gradient (its mask), else None; and the outputs of the modules in ``keep``
        (seeds, argmaxes).
        """
        records: list[Tensor | None] = []
        outputs: dict[int, Tensor] = {}
        switches: list[Tensor] = []
        relu_out = self.method != "deconvnet"

        def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            i = len(records)
            if i >= depth or module is not self.chain[i]:
                raise ModelError("the model's forward did not run the traced chain of modules")
            if i in keep:
                outputs[i] = output
            if isinstance(module, nn.MaxPool2d):
                records.append(switches.pop())
            elif relu_out and isinstance(module, nn.ReLU):
                records.append(output)
            else:
                records.append(None)
            if len(records) == depth:
                raise _hooks.StopForward

        def pool_forward(m: nn.MaxPool2d) -> Callable[[Tensor], Tensor]:
            def forward(inp: Tensor) -> Tensor:
                out, idx = _switches(m, inp)
                switches.append(idx)
                return out

            return forward

        with (
            torch.no_grad(),
            _hooks.truncated(self.model, None, self.method) as fwd,
            ExitStack() as hooks,
        ):
            for m in dict.fromkeys(self.chain[:depth]):
                if isinstance(m, nn.MaxPool2d):
                    hooks.callback(_hooks._restore_forward, m, m.__dict__.get("forward"))
                    m.forward = pool_forward(m)  # type: ignore[assignment]
                hooks.callback(m.register_forward_hook(record).remove)
            fwd.run(x)
        if len(records) != depth:
            raise ModelError("the model's forward did not run the traced chain of modules")
        return records, outputs

    # -- backward ----------------------------------------------------------------------------------

    def backward(
        self,
        records: Sequence[Tensor | None],
        out: Tensor,
        depth: int,
        pairs: Sequence[_ConePair],
        emit: Emit,
    ) -> None:
        """Reconstruct ``pairs`` (of chain module ``depth - 1``, whose output is ``out``) and ``emit`` them.

        The pairs start as one batch, which splits wherever their windows stop agreeing in shape (at
        the map borders): deep in the network, where windows are small and calls many, they batch.
        """
        n = len(pairs)
        units = torch.tensor([p.unit for p in pairs])
        at = (torch.tensor([p.image for p in pairs]), units)
        r, c = torch.tensor([p.tops[0] for p in pairs]), torch.tensor([p.lefts[0] for p in pairs])
        signal = out.new_zeros(n, out.shape[1], 1, 1)
        signal[torch.arange(n), units, 0, 0] = out[at[0], at[1], r, c]
        todo: list[tuple[Tensor, list[_ConePair], int]] = [(signal, list(pairs), 0)]
        while todo:
            signal, batch, j = todo.pop()
            while j < depth:
                parts: dict[_Window, list[int]] = defaultdict(list)
                for q, p in enumerate(batch):
                    parts[p.shapes[j]].append(q)
                if len(parts) > 1:
                    first, *rest = parts.values()
                    todo.extend((signal[qs], [batch[q] for q in qs], j) for qs in rest)
                    signal, batch = signal[first], [batch[q] for q in first]
                signal = self._step(records, depth - 1 - j, j, signal, batch)
                j += 1
            emit(
                torch.tensor([p.index for p in batch]),
                signal,
                [p.tops[-1] for p in batch],
                [p.lefts[-1] for p in batch],
            )

    def _step(
        self, records: Sequence[Tensor | None], i: int, j: int, signal: Tensor, pairs: Sequence[_ConePair]
    ) -> Tensor:
        """The signal at chain module ``i``'s input from the one at its output (step ``j`` back)."""
        m = self.chain[i]
        win = pairs[0].shapes[j]
        n = len(pairs)
        if isinstance(m, nn.ReLU):
            if self.method == "deconvnet":
                return signal.clamp_(min=0)
            mask = self._gather(records[i], pairs, j, win) > 0
            if self.method == "guided":
                return torch.where(mask, signal.clamp(min=0), 0.0)
            return torch.where(mask, signal, 0.0)
        if isinstance(m, nn.Conv2d):
            if i not in self.flipped:
                self.flipped[i] = _flipped(m)
            return _conv_input_grad(signal, m, win, self.flipped[i])
        if isinstance(m, nn.MaxPool2d):
            idx = self._gather(records[i], pairs, j, win)
            in_w = self.sizes[i][1]
            rows = idx.div(in_w, rounding_mode="floor")
            top = torch.tensor([p.tops[j + 1] for p in pairs]).view(n, 1, 1, 1)
            left = torch.tensor([p.lefts[j + 1] for p in pairs]).view(n, 1, 1, 1)
            local = (rows - top) * win.in_width + (idx - rows * in_w - left)
            grad = signal.new_zeros(n, signal.shape[1], win.in_height * win.in_width)
            grad.scatter_add_(2, local.flatten(2), signal.reshape(n, signal.shape[1], -1))
            return grad.view(n, signal.shape[1], win.in_height, win.in_width)
        if i in self.bn_scale:
            return signal * self.bn_scale[i].view(1, -1, 1, 1)
        return signal  # identities

    @staticmethod
    def _gather(full: Tensor | None, pairs: Sequence[_ConePair], j: int, win: _Window) -> Tensor:
        """Each pair's window of a recorded map (the window at the module's output)."""
        assert full is not None
        parts = [
            full[
                p.image : p.image + 1,
                :,
                p.tops[j] : p.tops[j] + win.height,
                p.lefts[j] : p.lefts[j] + win.width,
            ]
            for p in pairs
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def _area(win: _Window) -> int:
    """Pixels of the window at the module's input."""
    return max(1, win.in_height * win.in_width if win.in_height else win.height * win.width)


def _switches(m: nn.MaxPool2d, x: Tensor) -> tuple[Tensor, Tensor]:
    """A max-pool's output and switches (the flat index of each window's first maximum in its map)."""
    return F.max_pool2d(  # type: ignore[call-overload,no-any-return]
        x, m.kernel_size, m.stride, m.padding, m.dilation, ceil_mode=m.ceil_mode, return_indices=True
    )


def _conv_macs(m: nn.Conv2d) -> int:
    kh, kw = _hooks._pair(m.kernel_size)  # type: ignore[arg-type]
    return m.out_channels * (m.in_channels // m.groups) * kh * kw


def _conv_input_grad(signal: Tensor, m: nn.Conv2d, win: _Window, flipped: Tensor | None) -> Tensor:
    """The conv's input gradient for an output-gradient window, cut to the input window (see _Window).

    ``flipped``: for a stride-1 conv, its weight as the equivalent forward conv's (see :func:`_flipped`).
    """
    rows = slice(win.clip_top, win.clip_top + win.in_height)
    cols = slice(win.clip_left, win.clip_left + win.in_width)
    if flipped is not None:  # oneDNN's forward conv, channels_last: ~30 % faster than conv_transpose2d
        (kh, kw), _, _ = _crop.module_geometry(m) or ((1, 1), None, None)
        fmt = torch.channels_last if flipped.is_contiguous(memory_format=torch.channels_last) else None
        x = signal.contiguous(memory_format=fmt) if fmt is not None else signal
        full = F.conv2d(x, flipped, padding=(kh - 1, kw - 1), dilation=m.dilation, groups=m.groups)
        return full[..., rows, cols]
    weight = m.weight.detach()
    stride = _hooks._pair(m.stride)  # type: ignore[arg-type]
    if _hooks._phase_ok(m):  # strided: a stride-1 conv plus a pixel shuffle (see _hooks.phase_backward)
        return _hooks._phase_conv_transpose(
            signal, weight, stride[0], win.clip_top, win.clip_left, win.in_height, win.in_width
        )
    full = F.conv_transpose2d(signal, weight, stride=stride, dilation=m.dilation, groups=m.groups)
    return full[..., rows, cols]


def _flipped(m: nn.Conv2d) -> Tensor | None:
    """A stride-1 conv's weight for the forward conv that computes its transposed conv (None if strided).

    ``conv_transpose2d(g, w) == conv2d(g, w', padding=extent - 1)`` with ``w'`` the kernel flipped and
    the in/out channels of each group swapped: ``[C_in, C_out / groups, kh, kw]``.
    """
    if _hooks._pair(m.stride) != (1, 1):  # type: ignore[arg-type]
        return None
    w = m.weight.detach()
    g = m.groups
    c_out, c_in_g, kh, kw = w.shape
    w = w.reshape(g, c_out // g, c_in_g, kh, kw).transpose(1, 2).reshape(g * c_in_g, c_out // g, kh, kw)
    w = w.flip(-2, -1)
    if g * c_in_g >= 8:  # channels_last: ~30 % faster on 2 cores; not for the 3-channel image gradient
        return w.contiguous(memory_format=torch.channels_last)
    return w.contiguous()


def _cone_supported(m: nn.Module) -> bool:
    """Whether the cone backward has ``m``'s rule (exact types: a subclass may change the forward)."""
    if type(m) is nn.Conv2d:
        return _crop.module_geometry(m) is not None
    if type(m) is nn.MaxPool2d:
        return not m.return_indices
    if isinstance(m, nn.ReLU):
        return type(m) is nn.ReLU
    if type(m) is nn.BatchNorm2d:
        return not m.training and m.running_var is not None
    return type(m) in (nn.Identity, nn.Dropout, nn.Dropout2d, nn.AlphaDropout) and not m.training
