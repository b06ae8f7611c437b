"""Demo training: a checkpoint per epoch, resume after interruption equals an uninterrupted run, caching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sitegen.spec import TrainSpec
from sitegen.train import train, train_key

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )


@pytest.fixture
def data() -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(24, 3, 8, 10, generator=g)
    y = torch.arange(24) % 3
    x[y == 1, 0] += 0.5  # a learnable signal
    return TensorDataset(x[:18], y[:18]), TensorDataset(x[18:], y[18:])


def run(tmp_path: Path, data, epochs: int, key: str = "k", progress=None):
    tspec = TrainSpec(epochs=epochs, batch_size=6, lr=0.05)
    net = tiny_net()
    result = train(
        net, data[0], data[1], tspec, key=key, mean=MEAN, std=STD, out_dir=tmp_path, seed=0,
        device=torch.device("cpu"), progress=progress,
    )
    return net, result


def interrupt_at(step: int):
    def progress(_label: str, done: int, _total: int) -> None:
        if done == step:
            raise KeyboardInterrupt

    return progress


def test_one_checkpoint_per_epoch(tmp_path: Path, data) -> None:
    _, result = run(tmp_path, data, 3)
    assert [name for name, _ in result.checkpoints] == ["epoch-1", "epoch-2", "epoch-3"]
    assert all(path.is_file() for _, path in result.checkpoints)
    assert [e.epoch for e in result.history] == [1, 2, 3]
    assert all(0.0 <= e.probe_acc <= 1.0 for e in result.history)
    assert not result.cached
    ckpt = torch.load(result.checkpoints[0][1], weights_only=True)
    assert set(ckpt) >= {"state_dict", "optimizer", "epoch"}


def test_resume_equals_uninterrupted(tmp_path: Path, data) -> None:
    straight, _ = run(tmp_path / "a", data, 3)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", data, 3, progress=interrupt_at(4))  # 3 steps an epoch: killed inside epoch 2
    assert sorted(p.name for p in (tmp_path / "b").glob("epoch-*.pt")) == ["epoch-1.pt"]
    resumed, result = run(tmp_path / "b", data, 3)
    assert not result.cached
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)


def test_history_without_its_checkpoint_is_retrained(tmp_path: Path, data) -> None:
    """train.json lists epoch 2 but epoch-2.pt is gone: epoch 2 is trained again from epoch-1.pt."""
    straight, _ = run(tmp_path / "a", data, 2)
    run(tmp_path / "b", data, 2)
    (tmp_path / "b" / "epoch-2.pt").unlink()
    again, result = run(tmp_path / "b", data, 2)
    assert not result.cached
    assert [e.epoch for e in result.history] == [1, 2]
    assert (tmp_path / "b" / "epoch-2.pt").is_file()
    for a, b in zip(straight.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_cached_when_unchanged(tmp_path: Path, data) -> None:
    first, _ = run(tmp_path, data, 2)
    mtime = (tmp_path / "epoch-2.pt").stat().st_mtime_ns
    second, result = run(tmp_path, data, 2)
    assert result.cached
    assert (tmp_path / "epoch-2.pt").stat().st_mtime_ns == mtime
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_changed_inputs_start_over(tmp_path: Path, data) -> None:
    run(tmp_path, data, 2, key="old")
    _, result = run(tmp_path, data, 1, key="new")
    assert not result.cached
    assert sorted(p.name for p in tmp_path.glob("epoch-*.pt")) == ["epoch-1.pt"]


def test_train_key() -> None:
    base = {"arch": "a", "fingerprint": "f", "mean": MEAN, "std": STD, "seed": 0}
    constant = {"schedule": "constant"}
    two, five = TrainSpec(epochs=2, **constant), TrainSpec(epochs=5, **constant)
    assert train_key(two, **base) == train_key(five, **base)
    assert train_key(TrainSpec(epochs=2), **base) != train_key(TrainSpec(epochs=5), **base)  # cosine
    assert train_key(TrainSpec(lr=0.1), **base) != train_key(TrainSpec(lr=0.2), **base)
    assert train_key(TrainSpec(), **{**base, "fingerprint": "g"}) != train_key(TrainSpec(), **base)
