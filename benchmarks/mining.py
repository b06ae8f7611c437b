"""Mining speed as a ratio to a bare forward pass, measured in one run.

Times ``sitegen.mine.mine`` over every ``layers: auto`` layer (conv1..conv5 after ReLU, fc6,
fc7, fc8, prob for alexnet; every conv after ReLU, fc6..fc8, prob for vgg16) of torchvision models
with random weights, against bare forward passes over the same in-memory images through the same
DataLoader, at the same batch size and memory format (both channels_last and contiguous are
reported). The two are interleaved batch by batch: after each mined batch, mine's progress
callback runs the bare forward of the same batch, because the machine this was written on is
shared and noisy (10-30 % run to run, shared/PERFORMANCE.md; whole-run interleaving gave ratios
from 0.7 to 2.5 on a busy day). Printed per model and memory format: img/s of both, and the
mining/bare ratio as a wall-clock total, as the median of per-batch ratios, and in process CPU
time (with ``--threads 1`` the work ratio, least moved by other jobs). Target: <= 1.10 at batch 16.

On an oversubscribed machine, two threads mislead: every op large enough to run in parallel
waits for the second OpenMP thread to be scheduled (there, a 0.06 ms ``cat`` took 16 ms and a
3 ms sort 23 ms), which inflates mining's many small table ops far more than the forward's few
large ones. Compare ``--threads 1`` and check ``--control`` (bare vs bare) before trusting a ratio.

Run::

    python benchmarks/mining.py                       # alexnet + vgg16, ~2-3 minutes on 2 cores
    python benchmarks/mining.py --models alexnet --images 512 --repeats 5 --formats channels_last
    python benchmarks/mining.py --threads 1 --control   # work ratio, plus an A/A noise floor
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import replace
from typing import NamedTuple

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sitegen.mine import mine
from sitegen.models.types import LayerInfo, LoadedModel

# vgg16 runs ~8 img/s on a 2-core CPU (PERFORMANCE.md): fewer images keep the default run short.
DEFAULT_IMAGES = {"alexnet": 320, "vgg16": 64}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def auto_layers(module: nn.Module, arch: str, size: int) -> tuple[LayerInfo, ...]:
    """``layers: auto`` of a torchvision alexnet/vgg: every conv after its ReLU, fc6-fc8, prob.

    Uses ``sitegen.models.layer_table`` when it exists; otherwise walks the Sequential
    ``features``/``classifier`` blocks (RF fields are 0: mining does not read them).
    """
    try:
        from sitegen.models import layer_table  # type: ignore[attr-defined]
    except ImportError:
        pass
    else:
        return tuple(layer_table(module, size, "auto"))

    shapes: dict[str, tuple[int, ...]] = {}
    named = dict(module.named_modules())
    handles = [
        m.register_forward_hook(lambda _m, _a, out, p=path: shapes.__setitem__(p, tuple(out.shape[1:])))
        for path, m in named.items()
        if path
    ]
    with torch.inference_mode():
        module(torch.zeros(1, 3, size, size))
    for handle in handles:
        handle.remove()

    layers: list[LayerInfo] = []
    block, conv_in_block, conv, fc = 1, 0, 0, 5
    for part in ("features", "classifier"):
        children = list(named[part].named_children())
        for i, (name, child) in enumerate(children):
            path = f"{part}.{name}"
            follows = children[i + 1][1] if i + 1 < len(children) else None
            if isinstance(child, nn.MaxPool2d):
                block, conv_in_block = block + 1, 0
            elif isinstance(child, (nn.Conv2d, nn.Linear)):
                out = f"{part}.{children[i + 1][0]}" if isinstance(follows, nn.ReLU) else path
                if isinstance(child, nn.Conv2d):
                    conv, conv_in_block = conv + 1, conv_in_block + 1
                    friendly = f"conv{conv}" if arch == "alexnet" else f"conv{block}_{conv_in_block}"
                    kind = "conv"
                else:
                    fc += 1
                    friendly, kind = f"fc{fc}", "linear"
                shape = shapes[out]
                layers.append(LayerInfo(friendly, out, kind, shape, shape[0], 0, 0, 0.0))
    classes = shapes["classifier"][0]
    layers.append(LayerInfo("prob", "", "prob", (classes,), classes, 0, 0, 0.0))
    return tuple(layers)


def bare_batch(model: LoadedModel, x: torch.Tensor, channels_last: bool) -> None:
    """The baseline: the same normalization and memory format as ``mine``, no hooks."""
    with torch.inference_mode():
        x = model.normalize(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        model.module(x)


class Clock(NamedTuple):
    wall: float
    cpu: float

    @classmethod
    def now(cls) -> Clock:
        return cls(time.perf_counter(), time.process_time())


class Interleaved:
    """A ``mine`` progress callback that runs the bare forward of the same batch after each mined one.

    Batch-level interleaving exposes both to the same load from other jobs, which whole-run
    interleaving did not (ratios from 0.7 to 2.5 between repeats on a busy machine).
    """

    def __init__(self, model: LoadedModel, loader: DataLoader, channels_last: bool) -> None:
        self.model, self.channels_last = model, channels_last
        self.batches = iter(loader)
        self.bare = Clock(0.0, 0.0)
        self.mined_batches: list[float] = []
        self.bare_batches: list[float] = []
        self.mark = Clock.now()

    def __call__(self, done: int, total: int) -> None:
        start = Clock.now()
        self.mined_batches.append(start.wall - self.mark.wall)
        x, _ = next(self.batches)
        bare_batch(self.model, x, self.channels_last)
        self.mark = Clock.now()
        self.bare_batches.append(self.mark.wall - start.wall)
        self.bare = Clock(
            self.bare.wall + self.mark.wall - start.wall, self.bare.cpu + self.mark.cpu - start.cpu
        )


def control(model: LoadedModel, copy_: LoadedModel, loader: DataLoader, channels_last: bool) -> float:
    """Wall time of bare batches on the original network over bare batches on its copy, interleaved.

    An A/A test: how far from 1.0 two identical workloads land on this machine right now (and
    whether the copy is any faster or slower than the original).
    """
    original = copied = 0.0
    for x, _ in loader:
        start = time.perf_counter()
        bare_batch(model, x, channels_last)
        middle = time.perf_counter()
        bare_batch(copy_, x, channels_last)
        original, copied = original + middle - start, copied + time.perf_counter() - middle
    return original / copied


def bench(
    arch: str, images: int, batch: int, repeats: int, formats: list[str], k: int, with_control: bool
) -> None:
    torch.manual_seed(0)
    module = getattr(torchvision.models, arch)(weights=None).eval()
    size = 224
    model = LoadedModel(
        module=module,
        arch=arch,
        num_classes=1000,
        input_size=size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        layers=auto_layers(module, arch, size),
        params=sum(p.numel() for p in module.parameters()),
    )
    # The bare forward runs on a copy: mine's hooks stay registered on the original while it calls back.
    bare_model = replace(model, module=copy.deepcopy(module))
    data = TensorDataset(torch.rand(images, 3, size, size), torch.randint(0, 1000, (images,)))
    names = ", ".join(info.name for info in model.layers)
    print(f"{arch}: {images} images, batch {batch}, k {k}, {len(model.layers)} layers ({names})")
    for fmt in formats:
        channels_last = fmt == "channels_last"
        bare_batch(bare_model, data.tensors[0][:batch], channels_last)  # warm-up
        wall, cpu, per_batch, bare_s, mined_s = [], [], [], [], []
        for _ in range(repeats):
            probe = Interleaved(bare_model, DataLoader(data, batch_size=batch), channels_last)
            start = Clock.now()
            mine(model, data, k=k, batch_size=batch, channels_last=channels_last, progress=probe)
            end = Clock.now()
            # mine() time = the whole call minus the bare batches run inside its callbacks.
            mined = Clock(end.wall - start.wall - probe.bare.wall, end.cpu - start.cpu - probe.bare.cpu)
            wall.append(mined.wall / probe.bare.wall)
            cpu.append(mined.cpu / probe.bare.cpu)
            per_batch.append(
                statistics.median(m / b for m, b in zip(probe.mined_batches, probe.bare_batches, strict=True))
            )
            bare_s.append(probe.bare.wall)
            mined_s.append(mined.wall)
        print(
            f"  {fmt:>13}: bare {images / statistics.median(bare_s):6.1f} img/s  "
            f"mining {images / statistics.median(mined_s):6.1f} img/s  "
            f"ratio {statistics.median(wall):.3f} (wall; per repeat {', '.join(f'{r:.3f}' for r in wall)}), "
            f"{statistics.median(per_batch):.3f} (median batch), {statistics.median(cpu):.3f} (CPU time)"
        )
        if with_control:
            aa = control(model, bare_model, DataLoader(data, batch_size=batch), channels_last)
            print(f"  {'':>13}  control, bare vs bare (A/A): {aa:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="alexnet,vgg16", help="comma-separated torchvision archs")
    parser.add_argument("--images", type=int, default=None, help="images per model (default: per model)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--formats", default="channels_last,contiguous", help="memory formats to compare")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--control", action="store_true", help="also time bare vs bare (the noise floor)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device cpu")
    formats = args.formats.split(",")
    for arch in args.models.split(","):
        images = args.images or DEFAULT_IMAGES.get(arch, 64)
        bench(arch, images, args.batch, args.repeats, formats, args.k, args.control)


if __name__ == "__main__":
    main()
