"""Cost of issue 15 item 6 at seed scale: similar units, CKA of two networks, Hungarian matching.

Synthetic float16 per-image maxima in the shape of the seed-scale atlas (alexnet, 3,040 probe
images: conv1..conv5 = 96, 256, 384, 384, 256 units, fc6/fc7 4096, fc8/prob 160; shown units: every
conv unit, 512 of fc6/fc7, every fc8/prob unit), written to a temporary ``activations.npy`` and read
back as the build reads it. Each stage is timed once (wall clock) with its peak of traced numpy
memory (tracemalloc; BLAS scratch not included)::

    python benchmarks/similarity.py [--images 3040] [--threads N]

Rows: ``similar`` (the registered kind's per-layer work), ``cka`` (one compare-page pair: 9 x 9
layers, float64), ``hungarian`` (one diff: correlation matrix + assignment for every layer).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from sitegen.analyses.similar import layer_similar
from sitegen.analyses.similarity import assignment, cka_matrix, correlation_matrix

LAYERS = {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256, "fc6": 4096, "fc7": 4096,
          "fc8": 160, "prob": 160}


def _acts(path: Path, n: int, seed: int) -> tuple[np.ndarray, dict[str, slice]]:
    rng = np.random.default_rng(seed)
    total = sum(LAYERS.values())
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, total))
    cols, c = {}, 0
    base = rng.gamma(2.0, size=(n, 64)).astype(np.float32)
    for name, u in LAYERS.items():
        x = base @ rng.normal(size=(64, u)).astype(np.float32) + rng.normal(size=(n, u)).astype(np.float32)
        arr[:, c : c + u] = np.maximum(x, 0).astype(np.float16)
        cols[name] = slice(c, c + u)
        c += u
    arr.flush()
    del arr
    return np.load(path, mmap_mode="r"), cols


def _timed(label: str, fn) -> None:
    tracemalloc.start()
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    print(f"{label:<12} {dt:7.2f} s   peak traced {peak:6.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3040)
    ap.add_argument("--threads", type=int, default=0, help="BLAS threads (0: the library's default)")
    args = ap.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        a, cols = _acts(Path(tmp) / "a.npy", args.images, 0)
        b, _ = _acts(Path(tmp) / "b.npy", args.images, 1)
        names = list(LAYERS)
        shown = {n: list(range(u)) if u <= 384 else list(range(0, u, u // 512)) for n, u in LAYERS.items()}

        def similar() -> None:
            for i, n in enumerate(names):
                nxt = names[i + 1] if i + 1 < len(names) else None
                layer_similar(a[:, cols[n]], shown[n], b[:, cols[nxt]] if nxt else None, nxt, 6)

        def cka() -> None:
            cka_matrix([a[:, cols[n]] for n in names], [b[:, cols[n]] for n in names])

        def hungarian() -> None:
            for n in names:
                assignment(*correlation_matrix(a[:, cols[n]], b[:, cols[n]]))

        print(f"{args.images:,} images, {sum(LAYERS.values()):,} units per network")
        _timed("similar", similar)
        _timed("cka", cka)
        _timed("hungarian", hungarian)


if __name__ == "__main__":
    main()
