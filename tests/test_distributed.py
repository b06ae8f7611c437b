"""Sharded mining over 2 CPU processes (gloo) equals a single-process run, bit for bit."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_mine import Probe, TinyNet, assert_same_mined, tiny_images, tiny_model

from sitegen import _distributed
from sitegen.mine import LayerTopK, Mined, mine

WORLD = 2
N_IMAGES = 11  # shards of 5 and 6 images: fewer than K on rank 0
K = 6
# Ties across the shard boundary (image 8 copies 1) and inside a shard (3 copies 2).
DUPLICATES = {8: 1, 3: 2, 10: 1}


def _probe() -> Probe:
    return Probe(tiny_images(N_IMAGES, DUPLICATES), labels=[(3 * i) % 4 for i in range(N_IMAGES)])


def _save(mined: Mined, path: Path) -> None:
    arrays = {"labels": mined.labels, "top5": mined.top5, "top5_prob": mined.top5_prob}
    assert mined.features is not None
    arrays["features"] = mined.features
    for name, t in mined.layers.items():
        for field in ("values", "images", "rows", "cols"):
            arrays[f"{name}/{field}"] = getattr(t, field)
    np.savez(path, **arrays)


def _load(path: Path, names: list[str]) -> Mined:
    with np.load(path) as z:
        layers = {n: LayerTopK(*(z[f"{n}/{f}"] for f in ("values", "images", "rows", "cols"))) for n in names}
        return Mined(layers, z["labels"], z["top5"], z["top5_prob"], z["features"])


def _worker(rank: int, port: int, out: str) -> None:
    """One torchrun-like rank: environment, init_from_env, mine, save."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    assert _distributed.init_from_env("cpu") == (rank, WORLD)
    try:
        assert _distributed.shard(N_IMAGES, rank, WORLD) == [range(0, 5), range(5, 11)][rank]
        mined = mine(tiny_model(net=TinyNet()), _probe(), k=K, batch_size=2, features=True)
        _save(mined, Path(out) / f"rank{rank}.npz")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)
def test_two_gloo_ranks_equal_single_process(tmp_path: Path) -> None:
    single = mine(tiny_model(), _probe(), k=K, batch_size=3, features=True)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        assert_same_mined(_load(tmp_path / f"rank{rank}.npz", list(single.layers)), single)


def test_single_process_helpers() -> None:
    assert _distributed.rank_world() == (0, 1)
    assert [_distributed.shard(10, r, 3) for r in range(3)] == [range(0, 3), range(3, 6), range(6, 10)]
    assert [len(_distributed.shard(1, r, 2)) for r in range(2)] == [0, 1]
    t = torch.arange(4)
    assert _distributed.all_gather_cat(t, [4]) is t
