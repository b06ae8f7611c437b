"""The shared-forward path: one forward per image, each pair's backward cropped to its cone.

:class:`_Cone` forwards each distinct image once (recording max-pool switches and ReLU masks) and
runs every pair's backward explicitly, module by module, on the window of each map that the unit's
receptive-field cone covers; the per-module pieces are in :mod:`._cone_ops`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn

from sitegen.analyses import _crop, _hooks
from sitegen.analyses.reconstruct._cone_ops import (
    _area,
    _cone_supported,
    _ConePair,
    _conv_input_grad,
    _conv_macs,
    _flipped,
    _switches,
    _Window,
)
from sitegen.analyses.reconstruct._engine import _MAX_CHUNK, Emit
from sitegen.analyses.reconstruct._plan import _Plan
from sitegen.errors import ModelError


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
