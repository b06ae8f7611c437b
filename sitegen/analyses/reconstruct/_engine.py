"""The batched backward of one layer: pairs grouped into receptive-field crops, or whole images.

:class:`_Engine` runs many (unit, image, position) pairs of one layer through autograd with the
ReLU backward of the method (:mod:`sitegen.analyses._hooks`): on crops of the input to each unit's
receptive field (crops of one shape batched together, border crops lengthened to shared shapes when
there are many pairs), or, for linear and prob layers and non-chain networks, on whole images, each
forwarded once with its graph retained and many pairs' backwards run against it (batches from
:func:`_schedule`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor

from sitegen.analyses import _crop, _hooks, _phase
from sitegen.analyses.reconstruct._plan import _Plan, _Planner
from sitegen.errors import ModelError

Emit = Callable[[Tensor, Tensor, Sequence[int], Sequence[int]], None]

# Pairs per forward/backward at full image size; crops scale it by area (batch 16 beat 64 for VGG on a
# 2-core CPU, shared/PERFORMANCE.md).
DEFAULT_BATCH = 16
_MAX_CHUNK = 4096
# From this many pairs per layer on, border crops are rounded to shared lengths (see _Engine._quantum).
_BUCKET_MIN_PAIRS = 32

#: Memory for the retained forward graph of whole-image pairs (images per batch: see _Engine).
GRAPH_BYTES = 160 << 20


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
        # crops per batch: batch_size whole images' worth of pixels, and no more than GRAPH_BYTES of
        # retained graph (a graph's size goes with the crop's area: at batch_size 64, 120 conv5 crops of
        # 163 px held ~0.4 GB, the seed-scale build's peak RSS; issue 13, item 3)
        graph_images = self._images_per_graph(images)
        # autograd even when the caller runs under no_grad / inference_mode
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            _hooks.truncated(self.model, self.target, self.method) as fwd,
            _phase.phase_backward(plan.spatial or ()),
        ):
            for (valid_r, valid_c, h, w), members in sorted(groups.items()):
                chunk = max(1, min(_MAX_CHUNK, min(self.batch_size, graph_images) * full // (h * w)))
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
        strided = [m for m in self.model.modules() if _phase._phase_ok(m)]
        batch = min(self.batch_size, self._images_per_graph(images))
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            _hooks.truncated(self.model, self.target, self.method) as fwd,
            _phase.phase_backward(strided),
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
