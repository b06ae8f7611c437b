"""Reconstruction speed, measured as ratios in one run.

(a) alexnet atlas: for each conv layer (conv1..conv5 after ReLU, torchvision alexnet, random weights,
    224 px, random images), ``sitegen.reconstruct`` (batched, receptive-field crops) against captum's
    ``NeuronDeconvolution`` called once per (unit, image), both at the units' argmax positions. Prints
    ms per reconstruction for each, the per-layer ratio, and the whole-atlas ratio weighted by the
    layers' unit counts (64, 192, 384, 256, 256). Target: >= 10x. sitegen's pairs come from more
    units than captum's (the atlas batches all of a layer's units); time is per reconstruction.
    sitegen runs its crop path (``shared_forward=False``): in an atlas each unit has its own top-9
    images, so the one-forward-per-image path of (b) would be flattered by this sample, where all
    units reuse the same 9 images.
(b) vgg16, one 224 px image: the 3 channels with the largest activation norm in each of the 13 conv
    layers (after ReLU), each reconstructed at its maximum (deconvnet), 39 in all, in one
    ``reconstruct`` call (the image passed as ``image.expand(39, ...)``: sitegen forwards it once,
    then runs each feature's backward only on its receptive-field cone), against the baseline of one
    autograd backward per feature from a single retained forward (captum's way, minus captum). Both
    include the forward that picks the channels. Target: < 1.5 s on a quiet 2-core CPU, where the
    baseline took 2.9-3.1 s.

(c) the bare-backward limit, alexnet 224 px (random weights), per layer kind: conv2..conv5, fc6, fc7,
    fc8 and prob. The limit (as in shared/PERFORMANCE.md): a retained forward of a batch of 16 inputs
    (whole images for fc/prob, each unit's receptive-field crop for convs), then backwards that each
    seed one pair per input (deconvnet ReLU rule, plain autograd): seconds per backward / 16. Against
    it, ``reconstruct_topk`` (deconvnet) on a top-9 table of 64 units x 9 images drawn from 200
    images (conv positions: each unit's argmax in the image), everything included (image loading,
    forwards, display tiles). Prints ms per pair for both and the ratio; target <= 1.3. Measured
    (2026-12-04, ``--threads 1``, CPU time: the machine's load was 6 on 2 cores, so wall times
    drifted 3x): fc6 1.10, fc7 1.08, fc8 1.08, prob 1.12 (before the shared forward: fc6 1.84, prob
    1.83); conv2 1.56, conv3 2.04, conv4 1.93, conv5 1.87 (a conv pair forwards its crop too).

Variants are interleaved and repeated, medians reported: the machine is shared and noisy (10-30 %
run to run, shared/PERFORMANCE.md). Wall and CPU time are both printed: on an oversubscribed machine
CPU time is the steadier measure of the work done. Results are checked against captum / the
baseline before timing.

Run::

    python benchmarks/reconstruct.py              # parts a and b, about 2 minutes on 2 cores
    python benchmarks/reconstruct.py --part a --repeats 5
    python benchmarks/reconstruct.py --part c     # about 3 minutes on 2 cores
    python benchmarks/reconstruct.py --part c --threads 1   # CPU times steadier on a busy machine
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
import warnings
import zlib
from collections.abc import Callable

import numpy as np
import torch
import torchvision
from torch import nn

from sitegen.analyses import _crop, _hooks
from sitegen.analyses.reconstruct import reconstruct, reconstruct_topk
from sitegen.analyses.reconstruct._plan import _Planner
from sitegen.models.layers import layer_table
from sitegen.models.types import LoadedModel

ALEXNET_CONVS = {
    "conv1": "features.1",
    "conv2": "features.4",
    "conv3": "features.7",
    "conv4": "features.9",
    "conv5": "features.11",
}
ALEXNET_UNITS = {"conv1": 64, "conv2": 192, "conv3": 384, "conv4": 256, "conv5": 256}


def _interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each function; the order alternates between repeats.

    CPU time (all threads of this process) is printed too: on an oversubscribed machine, wall time
    mostly measures the neighbours, and OpenMP threads spinning at barriers inflate both.
    """
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    items = list(fns.items())
    for rep in range(repeats):
        for name, fn in items if rep % 2 == 0 else items[::-1]:
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k])) for k in fns}


def _check(worst: float, what: str) -> None:
    """Refuse to time a result that is wrong (float rounding gives ~1e-6 relative)."""
    if worst > 1e-4:
        raise SystemExit(
            f"{what}: sitegen differs from the reference by {worst:.1e} (relative): not timing it"
        )


def _argmax_positions(model: nn.Module, path: str, images: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), _hooks.truncated(model, _hooks.get_module(model, path)) as fwd:
        out = fwd(images)
    maps = out[torch.arange(len(units)), units].flatten(1)
    flat = maps.argmax(1)
    return torch.stack([flat // out.shape[-1], flat % out.shape[-1]], 1)


def _time_layer(
    model: nn.Module,
    path: str,
    x: torch.Tensor,
    units: torch.Tensor,
    pos: torch.Tensor,
    n_captum: int,
    repeats: int,
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Wall and CPU ms per reconstruction (captum, sitegen), and the worst relative difference."""
    from captum.attr import NeuronDeconvolution

    deconv = NeuronDeconvolution(model, _hooks.get_module(model, path))

    def run_captum() -> list[torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # captum warns about its ReLU hooks on every call
            return [
                deconv.attribute(x[i : i + 1], (int(units[i]), int(pos[i, 0]), int(pos[i, 1])))
                for i in range(n_captum)
            ]

    def run_ours() -> torch.Tensor:
        # the crop path: an atlas's top-9 images differ from unit to unit (reconstruct_topk), whereas
        # here every sampled unit reuses the same 9 images, which the shared-forward path would exploit
        return reconstruct(
            model, path, x, units, pos, method="deconvnet", batch_size=16, shared_forward=False
        )

    ref, ours = run_captum(), run_ours()
    # ours == captum x activation value (captum seeds the backward with 1, sitegen with the value)
    with torch.no_grad(), _hooks.truncated(model, _hooks.get_module(model, path)) as fwd:
        act = fwd(x[:n_captum])
    worst = 0.0
    for i in range(n_captum):
        r = ref[i][0] * act[i, units[i], pos[i, 0], pos[i, 1]]
        worst = max(worst, float((ours[i] - r).abs().max() / (r.abs().max() + 1e-30)))
    _check(worst, path)
    t = _interleaved({"captum": run_captum, "sitegen": run_ours}, repeats)
    per_c, per_o = 1e3 / n_captum, 1e3 / len(units)
    return (
        (t["captum"][0] * per_c, t["sitegen"][0] * per_o),
        (t["captum"][1] * per_c, t["sitegen"][1] * per_o),
        worst,
    )


def part_a(repeats: int, captum_units: int, units_per_layer: int, images: int) -> None:
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    pool = torch.rand(images, 3, 224, 224)
    pool = (pool - 0.45) / 0.225
    print(
        f"(a) alexnet 224 px, deconvnet; sitegen: {units_per_layer} units x {images} images per layer, "
        f"captum: {captum_units} units x {images} images, one call each; {repeats} interleaved repeats"
    )
    rows: list[tuple[str, float, float, float, float]] = []
    for name, path in ALEXNET_CONVS.items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        units = torch.randperm(ALEXNET_UNITS[name], generator=g)[:units_per_layer]
        pair_units = units.repeat_interleave(images)
        x = pool[torch.arange(images).repeat(units_per_layer)]
        pos = _argmax_positions(model, path, x, pair_units)
        (wc, wo), (cc, co), worst = _time_layer(
            model, path, x, pair_units, pos, captum_units * images, repeats
        )
        rows.append((name, wc, wo, cc, co))
        print(
            f"  {name}: wall captum {wc:7.2f} ms  sitegen {wo:7.3f} ms  ratio {wc / wo:6.1f}x | "
            f"CPU captum {cc:7.2f} ms  sitegen {co:7.3f} ms  ratio {cc / co:6.1f}x  (rel diff {worst:.1e})",
            flush=True,
        )
    for label, pairs in (("wall", [(r[1], r[2]) for r in rows]), ("CPU", [(r[3], r[4]) for r in rows])):
        weights = [ALEXNET_UNITS[r[0]] for r in rows]
        total_c = sum(w * c for w, (c, _) in zip(weights, pairs, strict=True))
        total_o = sum(w * o for w, (_, o) in zip(weights, pairs, strict=True))
        print(
            f"  whole atlas, {label} (weighted by units 64/192/384/256/256): {total_c / total_o:.1f}x "
            f"(top-9 of all 1152 units: captum {total_c * 9 / 1e3:.0f} s, sitegen {total_o * 9 / 1e3:.1f} s)"
        )


def part_b(repeats: int) -> None:
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None).eval()
    image = (torch.rand(1, 3, 224, 224) - 0.45) / 0.225
    relus = [f"features.{i + 1}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]

    def select() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """One forward: per layer the 3 channels of largest L2 norm and their argmax positions."""
        picks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        acts: dict[str, torch.Tensor] = {}
        hooks = [
            _hooks.get_module(model, p).register_forward_hook(
                lambda m, a, o, p=p: acts.__setitem__(p, o.detach().clone())
            )
            for p in relus
        ]
        try:
            with torch.no_grad(), _hooks.truncated(model, _hooks.get_module(model, relus[-1])) as fwd:
                fwd(image)
        finally:
            for h in hooks:
                h.remove()
        for p in relus:
            a = acts[p][0]
            ch = a.flatten(1).norm(dim=1).topk(3).indices
            flat = a[ch].flatten(1).argmax(1)
            picks[p] = (ch, torch.stack([flat // a.shape[-1], flat % a.shape[-1]], 1))
        return picks

    def ours() -> list[torch.Tensor]:
        picks = select()
        layers = [p for p in picks for _ in range(3)]
        units = torch.cat([ch for ch, _ in picks.values()])
        positions = torch.cat([pos for _, pos in picks.values()])
        rec = reconstruct(model, layers, image.expand(len(layers), -1, -1, -1), units, positions)
        return list(rec.split(3))

    def baseline() -> list[torch.Tensor]:
        """One retained full forward (custom ReLU backward), one autograd.grad per feature."""
        picks = select()
        acts: dict[str, torch.Tensor] = {}
        x = image.clone().requires_grad_(True)
        hooks = [  # registered before the stop-after-conv5_3 hook, so they run first
            _hooks.get_module(model, p).register_forward_hook(lambda m, a, o, p=p: acts.__setitem__(p, o))
            for p in relus
        ]
        try:
            with _hooks.truncated(model, _hooks.get_module(model, relus[-1]), "deconvnet") as fwd:
                fwd(x)
        finally:
            for h in hooks:
                h.remove()
        res = []
        for p, (ch, pos) in picks.items():
            rows = []
            for c, (r, col) in zip(ch.tolist(), pos.tolist(), strict=True):
                seed = torch.zeros_like(acts[p])
                seed[0, c, r, col] = acts[p][0, c, r, col].detach()
                (g,) = torch.autograd.grad(acts[p], x, seed, retain_graph=True)
                rows.append(g[0])
            res.append(torch.stack(rows))
        return res

    print(
        "(b) vgg16, one 224 px image, top-3 channels (L2 norm) of each of 13 conv layers, 39 deconvnet "
        f"reconstructions at each channel's maximum; {repeats} interleaved repeats"
    )
    a, b = ours(), baseline()
    worst = max(float((x - y).abs().max() / (y.abs().max() + 1e-30)) for x, y in zip(a, b, strict=True))
    _check(worst, "vgg16")
    t = _interleaved({"sitegen": ours, "baseline": baseline}, repeats)
    (wo, co), (wb, cb) = t["sitegen"], t["baseline"]
    print(
        f"  wall: sitegen {wo:.2f} s  baseline {wb:.2f} s  ratio {wb / wo:.1f}x | CPU: sitegen {co:.2f} s  "
        f"baseline {cb:.2f} s  ratio {cb / co:.1f}x  (max rel diff {worst:.1e})\n"
        f"  target < 1.5 s wall on a quiet 2-core CPU, where the baseline took 2.9-3.1 s: ratio >= 2"
    )


PART_C_LAYERS = ("conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8", "prob")


class _Table:
    """A mined top-k table (duck-typed sitegen.mine.LayerTopK) for reconstruct_topk."""

    def __init__(self, images: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> None:
        self.images, self.rows, self.cols = images, rows, cols
        self.values = np.zeros(images.shape, dtype=np.float32)


def _limit_inputs(
    model: nn.Module, path: str, x: torch.Tensor, pos: torch.Tensor
) -> tuple[torch.Tensor, tuple[nn.Module, ...]]:
    """For a conv layer: each pair's "valid" receptive-field crop (the unit's field inside the image,
    run unpadded: its map is 1x1, as on sitegen's crop path) and the modules to unpad; for fc/prob,
    the whole images."""
    plan = _Planner(model, crop=True).plan(path, False, x[:1])
    if plan.rows is None or plan.cols is None:
        return x, ()
    crops = []
    for i in range(len(x)):
        r = _crop.axis_crop(plan.rows, int(pos[i, 0]), x.shape[-2])
        c = _crop.axis_crop(plan.cols, int(pos[i, 1]), x.shape[-1])
        assert r.valid and c.valid, "the limit's pairs are interior units"
        crops.append(x[i, :, r.start : r.start + r.length, c.start : c.start + c.length])
    return torch.stack(crops), tuple(plan.spatial or ())


def _limit_backward(
    model: nn.Module,
    target: nn.Module | None,
    unpad: tuple[nn.Module, ...],
    inputs: torch.Tensor,
    units: torch.Tensor,
    softmax: bool,
    wall: list[float],
    cpu: list[float],
    rounds: int = 4,
) -> None:
    """The limit: a retained forward of ``inputs`` (not timed), then ``rounds`` backwards seeding one
    pair per input (unit ``units[i]``; a conv's "valid" crop has a 1x1 map); appends the seconds per
    pair of the backwards to ``wall`` and ``cpu``."""
    with (
        _hooks.truncated(model, target, "deconvnet") as fwd,
        _hooks.padding_off(unpad, rows=bool(unpad), cols=bool(unpad)),
    ):
        x = inputs.clone().requires_grad_(True)
        out = fwd(x)
        if softmax:
            out = torch.softmax(out, dim=1)
        flat = out.reshape(len(x), -1)
        at = (torch.arange(len(x)), units)
        seed = torch.zeros_like(flat)
        seed[at] = flat.detach()[at]
        w, c = time.perf_counter(), time.process_time()
        for q in range(rounds):
            torch.autograd.grad(out, x, seed.view_as(out), retain_graph=q < rounds - 1)
        wall.append((time.perf_counter() - w) / (rounds * len(x)))
        cpu.append((time.process_time() - c) / (rounds * len(x)))


def part_c(repeats: int, units_per_layer: int, pool_size: int, k: int = 9) -> None:
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    table_info = layer_table(model, 224)
    loaded = LoadedModel(
        module=model,
        arch="alexnet",
        num_classes=1000,
        input_size=224,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        layers=table_info,
        params=sum(p.numel() for p in model.parameters()),
    )
    pool = torch.rand(pool_size, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    normalized = loaded.normalize(pool)
    print(
        f"(c) alexnet 224 px, deconvnet: reconstruct_topk on {units_per_layer} units x {k} images drawn "
        f"from {pool_size}, against the bare batched backward (retained forward of 16 inputs, one pair "
        f"per input per backward); {repeats} interleaved repeats; ms per pair, wall | CPU"
    )
    ratios: dict[str, float] = {}
    for name in PART_C_LAYERS:
        info = loaded.layer(name)
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        units = sorted(rng.choice(info.units, units_per_layer, replace=False).tolist())
        images = np.stack([rng.choice(pool_size, k, replace=False) for _ in units])  # [unit j, rank]
        rows = np.zeros(images.shape, dtype=np.int32)
        cols = np.zeros(images.shape, dtype=np.int32)
        module = _hooks.get_module(model, info.module)
        if info.kind == "conv":  # each pair at its unit's argmax in the image, as mined
            with torch.no_grad(), _hooks.truncated(model, module) as fwd:
                for s in range(0, pool_size, 16):
                    out = fwd(normalized[s : s + 16])
                    for j, u in enumerate(units):
                        for r in range(k):
                            if s <= images[j, r] < s + 16:
                                flat = int(out[images[j, r] - s, u].argmax())
                                rows[j, r], cols[j, r] = divmod(flat, out.shape[-1])
        full = np.full((info.units, k), -1, dtype=np.int64)  # rows of the table are unit indices
        full[units] = images
        topk = _Table(full, np.zeros(full.shape, np.int32), np.zeros(full.shape, np.int32))
        topk.rows[units], topk.cols[units] = rows, cols
        pairs = images.size

        # the limit's batch: 16 pairs of the table on distinct images, interior units for convs
        if info.kind == "conv":
            plan = _Planner(model, crop=True).plan(info.module, False, normalized[:1])
            assert plan.rows is not None and plan.cols is not None
            ok = [
                (j, r)
                for j in range(len(units))
                for r in range(k)
                if _crop.axis_crop(plan.rows, int(rows[j, r]), 224).valid
                and _crop.axis_crop(plan.cols, int(cols[j, r]), 224).valid
            ]
        else:
            ok = [(j, r) for j in range(len(units)) for r in range(k)]
        seen: set[int] = set()
        chosen = []
        for j, r in ok:
            if int(images[j, r]) not in seen:
                seen.add(int(images[j, r]))
                chosen.append((j, r))
        chosen = chosen[:16]
        sel_img = torch.tensor([int(images[j, r]) for j, r in chosen])
        sel_units = torch.tensor([units[j] for j, _ in chosen])
        sel_pos = torch.tensor([[int(rows[j, r]), int(cols[j, r])] for j, r in chosen])
        inputs, unpad = _limit_inputs(model, info.module, normalized[sel_img], sel_pos)
        target = None if info.kind == "prob" else module
        lim_wall: list[float] = []  # the backwards only, per pair
        lim_cpu: list[float] = []
        limit = functools.partial(
            _limit_backward,
            model,
            target,
            unpad,
            inputs,
            sel_units,
            info.kind == "prob",
            lim_wall,
            lim_cpu,
            rounds=min(pairs, 256) // len(inputs),  # a run of a few seconds, as noisy as ours
        )
        ours = functools.partial(
            reconstruct_topk, loaded, pool.__getitem__, info, topk, units, method="deconvnet"
        )
        limit()  # warm-up (oneDNN builds its kernels on first use)
        lim_wall.clear()
        lim_cpu.clear()
        t = _interleaved({"limit": limit, "ours": ours}, repeats)
        lw, lc = statistics.median(lim_wall) * 1e3, statistics.median(lim_cpu) * 1e3
        ow, oc = t["ours"][0] * 1e3 / pairs, t["ours"][1] * 1e3 / pairs
        ratios[name] = ow / lw
        print(
            f"  {name:5s} ({info.kind:6s}): limit {lw:6.2f} ms  reconstruct_topk {ow:6.2f} ms  "
            f"ratio {ow / lw:4.2f} | CPU limit {lc:6.2f}  ours {oc:6.2f}  ratio {oc / lc:4.2f}",
            flush=True,
        )
    worst = max(ratios, key=lambda n: ratios[n])
    print(f"  worst wall ratio: {worst} {ratios[worst]:.2f} (target <= 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=["a", "b", "c", "both"], default="both", help="both: a and b")
    parser.add_argument("--repeats", type=int, default=None, help="default: 3 (parts a, b), 2 (part c)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--captum-units", type=int, default=4, help="units per layer timed with captum")
    parser.add_argument("--units", type=int, default=32, help="units per layer timed with sitegen")
    parser.add_argument("--images", type=int, default=9)
    parser.add_argument("--c-units", type=int, default=64, help="part c: units per layer")
    parser.add_argument("--c-pool", type=int, default=200, help="part c: images the tables draw from")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load}, "
        f"{os.cpu_count()} cores"
    )
    if args.part in ("a", "both"):
        part_a(args.repeats or 3, args.captum_units, args.units, args.images)
    if args.part in ("b", "both"):
        part_b(args.repeats or 3)
    if args.part == "c":
        part_c(args.repeats or 2, args.c_units, args.c_pool)


if __name__ == "__main__":
    main()
