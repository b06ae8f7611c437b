"""One layer's unit sprites: top-k patches and reconstruction panels, written a chunk of units at a time.

The only caller of :func:`~sitegen.analyses.patches.extract_patches` and
:func:`~sitegen.analyses.reconstruct.reconstruct_topk` in the build, with the progress helpers that
turn a chunk's or a layer's count into the checkpoint-wide bars.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from sitegen._memory import release_free_memory
from sitegen.analyses.patches import UnitPatches, extract_patches, sprite
from sitegen.analyses.reconstruct import reconstruct_topk
from sitegen.build.dataset import _ImageCache
from sitegen.mine import LayerTopK
from sitegen.models import LoadedModel
from sitegen.store import Store
from sitegen.store.manifest import SpriteLayout

Progress = Callable[[str, int, int], None]

#: Units whose patches and reconstruction tiles are held at once on crop layers: bounds RAM (VGG-19
#: conv5_4: 512 units x 9 tiles x 96 px x 3 x 2 panels = 255 MB at once otherwise).
SPRITE_CHUNK = 64

#: Threads encoding a layer's sprites: WebP encoding (~12 ms a 96 px 3x3 sprite pair) releases the
#: GIL, and 4,096 fc6 sprites on one thread left a core idle for ~50 s at seed scale (issue 13).
#: Each sprite is its own file, so the order of writes changes no byte.
SPRITE_WRITERS = 2


def _boxes(image_cache: _ImageCache, info: Any, topk: LayerTopK, image_size: int) -> UnitPatches:
    """The patch boxes of every unit of a layer (cheap arithmetic, no images): the store keeps them all."""
    return extract_patches(image_cache.uint8, info, topk, image_size, units=[])


def _layer_sprites(
    store: Store,
    network: str,
    checkpoint: str,
    info: Any,
    topk: LayerTopK,
    units: list[int],
    *,
    loaded: LoadedModel,
    image_cache: _ImageCache,
    image_size: int,
    methods: list[str],
    names: list[str],
    top_k: int,
    batch_size: int,
    device: torch.device,
    max_cell: int,
    grayscale: bool,
    pairs: Callable[[int, int], None],
    units_done: Callable[[int, int], None],
) -> tuple[SpriteLayout | None, float, float]:
    """Write one layer's unit sprites: patches, then one panel per reconstruction method.

    Crop layers go :data:`SPRITE_CHUNK` units at a time (their pairs share little work across units);
    whole-image layers (fc, prob) in one call, so that every probe image is forwarded once for all the
    units that rank it (their tiles go to a file past 128 MB: see ``reconstruct_topk``).

    Returns:
        The sprite layout (None: no panels, e.g. fc layers without reconstructions), and the seconds
        spent on patches and on reconstructions.
    """
    whole = info.kind in ("linear", "prob")
    chunk = max(1, len(units)) if whole else SPRITE_CHUNK
    cols = math.ceil(math.sqrt(top_k))
    layout: SpriteLayout | None = None
    t_patch = t_recon = 0.0
    done_pairs = 0
    scratch: list[torch.Tensor] = []  # the image buffer, reused by the layer's chunks
    for c0 in range(0, len(units), chunk):
        part = units[c0 : c0 + chunk]
        t = time.perf_counter()
        panels: list[Any] = []  # arrays or TileFiles
        if not whole:
            cut = extract_patches(image_cache.uint8, info, topk, image_size, units=part, max_cell=max_cell)
            panels.append(cut.cells)
        t_patch += time.perf_counter() - t
        t = time.perf_counter()
        for method in methods:
            panels.append(
                reconstruct_topk(
                    loaded,
                    image_cache.tensor,
                    info,
                    topk,
                    part,
                    method=method,
                    batch_size=batch_size,
                    device=device,
                    max_cell=max_cell,
                    image_size=image_size,
                    grayscale=grayscale,
                    progress=functools.partial(_shifted, pairs, done_pairs),
                    pixels=image_cache.pixels,
                    scratch=scratch,
                )
            )
            done_pairs += int((topk.images[part] >= 0).sum())
        t_recon += time.perf_counter() - t
        if not panels:  # fc/prob layers without reconstructions: their pages show the probe images
            continue
        layout = SpriteLayout(cell=panels[0].shape[2], cols=cols, rows=math.ceil(top_k / cols), panels=names)
        write = functools.partial(_write_sprite, store, network, checkpoint, info.name, part, panels, cols)
        with ThreadPoolExecutor(SPRITE_WRITERS) as pool:
            for j, _ in enumerate(pool.map(write, range(len(part)))):
                if j % 16 == 15 or j == len(part) - 1:
                    units_done(c0 + j + 1, 0)
        release_free_memory()  # the chunk's tiles, crops and graphs (sitegen._memory)
    return layout, t_patch, t_recon


def _write_sprite(
    store: Store,
    network: str,
    checkpoint: str,
    layer: str,
    part: list[int],
    panels: list[Any],
    cols: int,
    j: int,
) -> None:
    """Unit ``part[j]``'s sprite from its row of every panel (arrays or TileFiles: thread-safe reads)."""
    store.write_sprite(network, checkpoint, layer, part[j], sprite([p[j] for p in panels], cols))


def _shifted(progress: Callable[[int, int], None], base: int, done: int, total: int) -> None:
    """A chunk's ``progress(done, total)`` as the layer's, ``base`` pairs further on."""
    progress(base + done, total)


def _advance(report: Progress, label: str, base: int, total: int, done: int, _of: int) -> None:
    """A layer's ``progress(done, of)`` as the checkpoint-wide bar ``report(label, base + done, total)``."""
    report(label, base + done, total)
