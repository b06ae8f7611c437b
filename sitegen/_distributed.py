"""torch.distributed plumbing shared by the sharded stages (mining, reconstructions).

Launch with torchrun, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``::

    torchrun --nproc-per-node 4 -m sitegen build experiments.yaml

:func:`init_from_env` joins the process group once (gloo on CPU, nccl on CUDA). The probe split
is then cut into contiguous shards (:func:`shard`): rank r's images come before rank r + 1's, and
stages keep GLOBAL image indices, so gathering shards in rank order restores the probe order.
Without torch.distributed everything here degrades to a world of one.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_cat", "init_from_env", "rank_world", "shard"]


def init_from_env(device: str | torch.device = "cpu") -> tuple[int, int]:
    """Join the process group described by torchrun's environment, if any.

    Does nothing when the group is already initialized or when ``RANK``/``WORLD_SIZE`` are not
    set (a plain single-process run). The backend is nccl when ``device`` is CUDA (and the
    process is pinned to ``cuda:LOCAL_RANK``), gloo otherwise.

    Args:
        device: the device the stages will compute on.

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` without torch.distributed.
    """
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if launched and dist.is_available() and not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(
            backend="nccl" if cuda else "gloo",
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
        )
    return rank_world()


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialized default group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(n: int, rank: int, world: int) -> range:
    """Global indices of rank ``rank``'s contiguous share of ``n`` items (sizes differ by at most 1).

    Example:
        >>> [shard(10, r, 3) for r in range(3)]
        [range(0, 3), range(3, 6), range(6, 10)]
    """
    return range(n * rank // world, n * (rank + 1) // world)


def all_gather_cat(t: Tensor, sizes: list[int], dim: int = 0) -> Tensor:
    """Concatenate every rank's ``t`` along ``dim``, in rank order.

    ``all_gather`` needs equal shapes, so each rank pads ``t`` to ``max(sizes)`` along ``dim``
    and the padding is cut off again after the exchange.

    Args:
        t: this rank's part, on the device the backend expects (CPU for gloo, CUDA for nccl).
        sizes: every rank's extent along ``dim``; ``sizes[rank] == t.shape[dim]``.
        dim: the axis to concatenate.

    Returns:
        The concatenation, ``sum(sizes)`` long along ``dim``, identical on every rank.
    """
    rank, world = rank_world()
    if world == 1:
        return t
    if t.shape[dim] != sizes[rank]:
        raise ValueError(f"rank {rank}: extent {t.shape[dim]} along dim {dim}, expected {sizes[rank]}")
    longest = max(sizes)
    if longest == 0:
        return t
    padded_shape = list(t.shape)
    padded_shape[dim] = longest
    padded = t.new_zeros(padded_shape)
    padded.narrow(dim, 0, t.shape[dim]).copy_(t)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p.narrow(dim, 0, size) for p, size in zip(parts, sizes, strict=True)], dim=dim)


def barrier() -> None:
    """Wait for every rank (a no-op in a single-process run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
