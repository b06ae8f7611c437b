"""``reconstruct_topk``: each unit's mined top-k entries reconstructed and drawn as sprite tiles.

Probe images are loaded block by block into a reused buffer (:func:`_load_block`); conv layers go a
block of units at a time (:func:`_by_unit`: crops at the mined positions), linear and prob layers a
block of distinct images at a time (:func:`_by_image`: each image forwarded once for every unit that
ranks it). Tiles are drawn by :mod:`._tiles`' emit callbacks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sitegen.analyses import _crop
from sitegen.analyses.reconstruct._engine import DEFAULT_BATCH, Emit, _Engine
from sitegen.analyses.reconstruct._plan import _Planner, _resolve
from sitegen.analyses.reconstruct._tiles import (
    TileFile,
    _display_box,
    _display_size,
    _tile_into,
    _tile_whole,
)
from sitegen.models import LayerInfo, LoadedModel

# Distinct images held (as float) at once by reconstruct_topk's whole-image path: 128 x 3 x 224 x 224
# float32 is 77 MB.
_IMAGE_BLOCK = 128

#: Bytes of tiles :func:`reconstruct_topk` keeps in RAM; larger sets go to a :class:`TileFile`.
TILES_IN_RAM = 128 << 20

# probe indices of a block, capacity -> the block's images, normalized (see _load_block)
_Load = Callable[[Sequence[int] | np.ndarray, int], Tensor]


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
    counted = _Counted(len(ent_j), progress)
    # one block's images, normalized, in a buffer reused from block to block: a fresh tensor of
    # ~100 MB per block is mapped anew each time, and its page faults cost more than the copy
    # (profiled: 2 ms an image at 224 px on this 2-core VM, more than a conv2 pair's backward)
    buffer: list[Tensor] = [] if scratch is None else scratch
    load: _Load = functools.partial(_load_block, loaded, images_by_index, pixels, dev, buffer)
    if layer.kind in ("linear", "prob"):
        _by_image(
            engine,
            load,
            counted,
            out,
            table,
            sel_all,
            ent_j,
            ent_r,
            cell=cell,
            size=size,
            grayscale=grayscale,
        )
    else:
        _by_unit(
            engine, load, counted, out, layer, topk, units, table, sel_all, cell=cell, grayscale=grayscale
        )
    return out


class _Counted:
    """Wraps emit callbacks to count their pairs and call ``progress(done, total)`` after each."""

    def __init__(self, total: int, progress: Callable[[int, int], None] | None) -> None:
        self.total = total
        self.progress = progress
        self.done = 0

    def __call__(self, emit: Emit) -> Emit:
        def call(idx: Tensor, grads: Tensor, tops: Sequence[int], lefts: Sequence[int]) -> None:
            emit(idx, grads, tops, lefts)
            self.done += len(idx)
            if self.progress is not None:
                self.progress(self.done, self.total)

        return call


def _by_image(
    engine: _Engine,
    load: _Load,
    counted: _Counted,
    out: Any,
    table: np.ndarray,
    sel_all: np.ndarray,
    ent_j: np.ndarray,
    ent_r: np.ndarray,
    *,
    cell: int,
    size: int,
    grayscale: bool,
) -> None:
    """Linear and prob layers, by image: each distinct image is loaded and forwarded once for all the
    units that rank it (entries ``(ent_j, ent_r)`` of ``table[sel_all]``), :data:`_IMAGE_BLOCK` at a time.
    """
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


def _by_unit(
    engine: _Engine,
    load: _Load,
    counted: _Counted,
    out: Any,
    layer: LayerInfo,
    topk: Any,
    units: Sequence[int],
    table: np.ndarray,
    sel_all: np.ndarray,
    *,
    cell: int,
    grayscale: bool,
) -> None:
    """Conv (and block) layers, by unit: each entry reconstructed at its mined position (the argmax
    where none was mined) and cut to its patch's box, a block of units at a time.
    """
    k = int(table.shape[1])
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


def _load_block(
    loaded: LoadedModel,
    images_by_index: Callable[[int], Tensor],
    pixels: Callable[[int], Tensor] | None,
    dev: torch.device,
    buffer: list[Tensor],
    indices: Sequence[int] | np.ndarray,
    capacity: int,
) -> Tensor:
    """A block of probe images, normalized, in ``buffer`` (reused from block to block: see
    :func:`reconstruct_topk`); from their uint8 ``pixels`` when given (:func:`_load_pixels`).
    """
    if pixels is not None:
        return _normalize(loaded, _load_pixels(pixels, indices, capacity, dev, buffer))
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
    return _normalize(loaded, batch)


def _normalize(loaded: LoadedModel, batch: Tensor) -> Tensor:
    # loaded.normalize, in place: (x - mean) / std
    return batch.sub_(batch.new_tensor(loaded.mean).view(1, -1, 1, 1)).div_(
        batch.new_tensor(loaded.std).view(1, -1, 1, 1)
    )


def _load_pixels(
    pixels: Callable[[int], Tensor],
    indices: Sequence[int] | np.ndarray,
    capacity: int,
    dev: torch.device,
    buffer: list[Tensor],
) -> Tensor:
    """A block of probe images as float32 in [0, 1], from their uint8 pixels, in a buffer reused from
    block to block (see :func:`_load_block`).

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
