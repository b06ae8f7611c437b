"""Feature-visualization speed: batched units vs one unit at a time, as ratios measured in one run.

torchvision alexnet (``weights=None``), layer conv5 (``features.11``, the ReLU after the fifth conv; the
forward stops there), 128 px Fourier parametrization with colour decorrelation and transforms, Adam.
Three ways, each in ms per unit per optimization step:

- ``batched``: :func:`sitegen.analyses.featvis.featvis` with ``--units`` units in one batch.
- ``one-at-a-time``: the same function with ``batch_units=1`` (same code, batch of one).
- ``lucent-style``: one unit at a time the way lucent's ``render_vis`` runs it: the same
  parametrization, but the image upsampled to 224 px, the WHOLE network run (classifier included) and
  its parameters left trainable, so backward also computes weight gradients (shared/PERFORMANCE.md
  measured lucent itself at 48.5 ms/step vs 5.0 ms per channel-step batched: 9.6×).

Fixed costs (initial and final evaluation) are removed by timing ``steps`` and ``0`` steps and
dividing the difference. Runs are interleaved and medians reported: the machine this was written on is
shared and noisy (shared/PERFORMANCE.md). Target: lucent-style / batched >= 8 on a CPU.

Run::

    python benchmarks/featurevis.py                  # ~1-2 minutes on 2 cores
    python benchmarks/featurevis.py --units 64 --steps 16 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from sitegen.analyses.featvis import _augment, _Image, _transform_params, featvis
from sitegen.models._api import LayerInfo, LoadedModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def alexnet_conv5() -> LoadedModel:
    """torchvision alexnet with random weights; conv5 after its ReLU as the only layer."""
    torch.manual_seed(0)
    module = torchvision.models.alexnet(weights=None).eval()
    conv5 = LayerInfo("conv5", "features.11", "conv", (256, 7, 7), 256, 163, 32, 31.0)
    params = sum(p.numel() for p in module.parameters())
    return LoadedModel(module, "alexnet", 1000, 224, IMAGENET_MEAN, IMAGENET_STD, (conv5,), params)


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


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=32, help="units in the batched run")
    parser.add_argument("--single-units", type=int, default=2, help="units run one at a time")
    parser.add_argument("--steps", type=int, default=8, help="optimization steps per timed run")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu, load average {load}")
    model = alexnet_conv5()
    size, steps = args.size, args.steps
    batch_units = list(range(args.units))
    single_units = list(range(args.single_units))

    def batched(n: int) -> None:
        featvis(model, "conv5", batch_units, size=size, steps=n, batch_units=len(batch_units))

    def single(n: int) -> None:
        featvis(model, "conv5", single_units, size=size, steps=n, batch_units=1)

    def lucent(n: int) -> None:
        for u in single_units:
            lucent_style(model, u, size, n, seed=0)

    runs: dict[str, tuple[Callable[[int], None], int]] = {
        "batched": (batched, len(batch_units)),
        "one-at-a-time": (single, len(single_units)),
        "lucent-style": (lucent, len(single_units)),
    }
    print(
        f"alexnet conv5 (features.11), {size} px fourier+decorrelate+transforms, {steps} steps; "
        f"batched: {len(batch_units)} units in one batch; single: {len(single_units)} units"
    )
    single(1)
    batched(1)  # warm-up
    per_step: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.repeats):
        names = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in names:
            fn, units = runs[name]
            full, fixed = seconds(partial(fn, steps)), seconds(partial(fn, 0))
            per_step[name].append(1000 * (full - fixed) / (units * steps))
    med = {name: statistics.median(v) for name, v in per_step.items()}
    for name, v in per_step.items():
        repeats = ", ".join(f"{x:.2f}" for x in v)
        print(f"  {name:>14}: {med[name]:7.2f} ms per unit-step  (per repeat: {repeats})")
    print(f"  one-at-a-time / batched: {med['one-at-a-time'] / med['batched']:.1f}x")
    print(f"  lucent-style / batched:  {med['lucent-style'] / med['batched']:.1f}x  (target >= 8)")


if __name__ == "__main__":
    main()
