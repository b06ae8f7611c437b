"""Issue 15 (1): under torch.distributed every rank writes its shard's rows of the one
activations.npy, and the file equals a single-process run's, bit for bit (2 CPU ranks, gloo)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_distributed import N_IMAGES, WORLD, K, _free_port, _probe
from test_mine import TinyNet, tiny_model

from sitegen import _distributed
from sitegen.mine import mine


def _worker(rank: int, port: int, out: str) -> None:
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
        mined = mine(
            tiny_model(net=TinyNet()), _probe(), k=K, batch_size=2, activations=Path(out) / "acts.npy"
        )
        assert mined.activations is not None and mined.activations.path == Path(out) / "acts.npy"
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)
def test_two_gloo_ranks_write_one_file_equal_to_single_process(tmp_path: Path) -> None:
    single = mine(tiny_model(), _probe(), k=K, batch_size=3, activations=tmp_path / "single.npy")
    assert single.activations is not None
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    got = np.load(tmp_path / "acts.npy")
    assert got.shape[0] == N_IMAGES
    np.testing.assert_array_equal(got, single.activations.open())
