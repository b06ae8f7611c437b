"""``reconstruct``: one reconstruction per (unit, image) pair, pasted into an image-sized canvas.

Each layer's pairs run on the crop or whole-image path (:class:`~._engine._Engine`), or all of them
on the shared-forward cone path (:func:`_shared`, :class:`~._cone._Cone`) when it applies and pays.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sitegen.analyses.reconstruct._cone import _Cone
from sitegen.analyses.reconstruct._engine import DEFAULT_BATCH, _Engine
from sitegen.analyses.reconstruct._plan import _Planner, _resolve
from sitegen.models import LoadedModel


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
