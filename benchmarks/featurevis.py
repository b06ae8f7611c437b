"""Feature-visualization speed: batched units vs one unit at a time, as ratios measured in one run.

torchvision alexnet (``weights=None``), layer conv5 (``features.11``, the ReLU after the fifth conv),
128 px Fourier parametrization with colour decorrelation and transforms, Adam. Each row in ms per unit
per optimization step:

- ``batched``: :func:`sitegen.analyses.featvis.featvis` with ``--units`` units in one batch (the forward
  stops at conv5's input and conv5 is computed for each image's own channel only).
- ``batched, whole layer``: the same with ``own_channel=False`` (all 256 channels of conv5, then the
  unit's one picked), to show what the own-channel conv is worth.
- ``one-at-a-time``: the same function with ``batch_units=1`` (same code, a batch of one).
- ``lucent``: the real thing, lucent's ``render_vis`` (``pip install torch-lucent``, 0.1.8; it needs
  ``kornia`` and ``decorator``; it imports ``IPython.display`` only to show images, replaced here by an
  empty module when IPython is missing; with kornia >= 0.7 its two top-level kornia calls are pointed
  at ``kornia.geometry.transform``), one channel at a time as its README does it:
  ``render_vis(model, "features_11:<unit>", lambda: param.image(128), thresholds=(steps,))`` with its
  defaults: standard transforms, ImageNet normalization, upsampling to 224 px, the whole network run
  and its weights left trainable, Adam at lr 0.05. Skipped (and said so) when lucent is not installed.
- ``lucent-style``: a re-implementation of those lucent costs with this module's parametrization (224 px
  upsample, whole network, trainable weights), for machines without lucent.

Steps are counted the same way in every row: the time of a run of ``steps`` steps minus that of a run
of 0 steps (lucent: ``thresholds=(steps,)`` vs ``(0,)``), divided by units × steps, so set-up, the
initial and final evaluations are left out. Runs are interleaved (order reversed every other repeat)
and medians reported: the machines this was written on are shared and noisy (shared/PERFORMANCE.md).

The target of issue 7 (">= 8x batched vs one unit at a time") is judged against lucent, i.e. against one
unit at a time the way peers do it (shared/PERFORMANCE.md: lucent 48.5 ms/step vs 5.0 ms per
channel-step batched, 9.6x): real lucent when installed, else lucent-style. ``one-at-a-time / batched``
is printed too: it is what batching alone gains within this code (the other savings, the forward cut
after the layer, frozen weights, native 128 px and the own-channel conv, help a batch of one as well).

Run::

    python benchmarks/featurevis.py                  # 2-4 minutes on 2 cores
    python benchmarks/featurevis.py --threads 1 --clock cpu   # steadier when the machine is shared
    python benchmarks/featurevis.py --units 64 --steps 16 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from sitegen.analyses.featvis import featvis
from sitegen.analyses.featvis._param import _augment, _Image, _transform_params
from sitegen.models.types import LayerInfo, LoadedModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def alexnet_conv5() -> LoadedModel:
    """torchvision alexnet with random weights; conv5 after its ReLU as the only layer."""
    torch.manual_seed(0)
    module = torchvision.models.alexnet(weights=None).eval()
    conv5 = LayerInfo("conv5", "features.11", "conv", (256, 7, 7), 256, 163, 32, 31.0)
    params = sum(p.numel() for p in module.parameters())
    return LoadedModel(module, "alexnet", 1000, 224, IMAGENET_MEAN, IMAGENET_STD, (conv5,), params)


def import_lucent() -> tuple[Any, Any] | str:
    """``(lucent.optvis.render, lucent.optvis.param)``, or why lucent cannot be used."""
    try:
        import IPython.display  # noqa: F401 (lucent's show() needs it; it is never called here)
    except ImportError:
        ipython = types.ModuleType("IPython")
        ipython.display = types.ModuleType("IPython.display")  # type: ignore[attr-defined]
        sys.modules.setdefault("IPython", ipython)
        sys.modules.setdefault("IPython.display", ipython.display)  # type: ignore[attr-defined]
    try:
        import kornia
        import kornia.geometry.transform as kornia_transform
        from lucent.optvis import param, render
    except ImportError as e:
        return f"not installed: {e} (pip install torch-lucent kornia decorator)"
    # lucent 0.1.8 calls kornia.get_rotation_matrix2d / kornia.warp_affine, which kornia >= 0.7 keeps
    # under kornia.geometry.transform only
    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kornia_transform, name))
    return render, param


def lucent_real(model: LoadedModel, lucent: tuple[Any, Any], unit: int, size: int, steps: int) -> None:
    """One unit with lucent's ``render_vis``, its defaults (Adam 0.05, standard transforms, 224 px)."""
    render, param = lucent
    torch.manual_seed(unit)
    render.render_vis(
        model.module,
        f"features_11:{unit}",
        lambda: param.image(size),
        thresholds=(steps,),
        show_image=False,
        progress=False,
    )
    model.module.zero_grad(set_to_none=True)  # lucent leaves weight gradients behind


def lucent_style(model: LoadedModel, unit: int, size: int, steps: int, seed: int) -> None:
    """One unit, lucent ``render_vis`` costs: 224 px upsample, full forward, trainable weights."""
    module, target = model.module, dict(model.module.named_modules())["features.11"]
    image = _Image(size, "fourier", True, False, torch.device("cpu"))
    rng = np.random.default_rng([seed, unit])
    p = torch.from_numpy(image.init(rng)[None]).requires_grad_(True)
    moves = torch.from_numpy(_transform_params(rng, steps, size)[None])
    captured: list[torch.Tensor] = []
    handle = target.register_forward_hook(lambda _m, _a, out: captured.append(out))
    opt = torch.optim.Adam([p], lr=0.05)
    try:
        for step in range(steps):
            captured.clear()
            opt.zero_grad(set_to_none=True)
            x = _augment(image(p), moves[:, step])
            x = F.interpolate(x, size=224, mode="bilinear", align_corners=True)
            module(model.normalize(x))  # the whole network, as lucent runs it
            loss = -captured[0][:, unit].mean()
            loss.backward()
            opt.step()
    finally:
        handle.remove()
        module.zero_grad(set_to_none=True)


def seconds(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=32, help="units in the batched run")
    parser.add_argument("--single-units", type=int, default=2, help="units run one at a time")
    parser.add_argument("--steps", type=int, default=8, help="optimization steps per timed run")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-lucent", action="store_true", help="skip real lucent even if installed")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (steadier on a busy machine with --threads 1)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, {args.clock} clock, "
        f"load average {load}"
    )
    model = alexnet_conv5()
    size, steps = args.size, args.steps
    batch_units = list(range(args.units))
    single_units = list(range(args.single_units))
    lucent = "skipped (--no-lucent)" if args.no_lucent else import_lucent()

    def batched(n: int, own_channel: bool = True) -> None:
        featvis(
            model,
            "conv5",
            batch_units,
            size=size,
            steps=n,
            batch_units=len(batch_units),
            own_channel=own_channel,
        )

    def single(n: int) -> None:
        featvis(model, "conv5", single_units, size=size, steps=n, batch_units=1)

    def style(n: int) -> None:
        for u in single_units:
            lucent_style(model, u, size, n, seed=0)

    runs: dict[str, tuple[Callable[[int], None], int]] = {
        "batched": (batched, len(batch_units)),
        "batched, whole layer": (partial(batched, own_channel=False), len(batch_units)),
        "one-at-a-time": (single, len(single_units)),
        "lucent-style": (style, len(single_units)),
    }
    if not isinstance(lucent, str):
        lucent_mod = lucent

        def real(n: int) -> None:
            for u in single_units:
                lucent_real(model, lucent_mod, u, size, n)

        runs["lucent"] = (real, len(single_units))
    print(
        f"alexnet conv5 (features.11), {size} px fourier+decorrelate+transforms, {steps} steps; "
        f"batched: {len(batch_units)} units in one batch; one at a time: {len(single_units)} units"
    )
    print(f"lucent: {'torch-lucent, render_vis' if not isinstance(lucent, str) else lucent}")
    for fn, _ in runs.values():  # warm-up
        fn(1)
    per_step: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.repeats):
        names = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in names:
            fn, units = runs[name]
            full, fixed = seconds(partial(fn, steps), clock), seconds(partial(fn, 0), clock)
            per_step[name].append(1000 * (full - fixed) / (units * steps))
    med = {name: statistics.median(v) for name, v in per_step.items()}
    for name, v in per_step.items():
        repeats = ", ".join(f"{x:.2f}" for x in v)
        print(f"  {name:>20}: {med[name]:7.2f} ms per unit-step  (per repeat: {repeats})")
    judge = "lucent" if "lucent" in med else "lucent-style"
    b = med["batched"]
    print(f"  one-at-a-time / batched:        {med['one-at-a-time'] / b:5.1f}x  (batching alone, same code)")
    print(f"  batched, whole layer / batched: {med['batched, whole layer'] / b:5.1f}x  (own-channel conv5)")
    print(f"  lucent-style / batched:         {med['lucent-style'] / b:5.1f}x")
    if "lucent" in med:
        print(f"  lucent / batched:               {med['lucent'] / b:5.1f}x")
    ratio = med[judge] / b
    verdict = "met" if ratio >= 8 else "NOT met"
    print(f"target >= 8x one unit at a time as lucent runs it ({judge} / batched): {ratio:.1f}x, {verdict}")


if __name__ == "__main__":
    main()
