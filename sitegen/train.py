"""Demo training: a checkpoint per epoch (epoch-1 … epoch-N) and the probe accuracy of each.

Built for the embedded default (small nets, doodles, CPU, minutes). It resumes
from the last saved epoch after an interruption (model, optimizer and RNG state
are in each checkpoint) and is skipped when its checkpoints exist and the
training inputs (train block, arch, dataset fingerprint, normalization, seed)
are unchanged; changed inputs start over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sitegen.spec import TrainSpec
from sitegen.store import codecs

log = logging.getLogger("sitegen")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class Epoch:
    """One epoch's record."""

    epoch: int
    loss: float
    train_acc: float
    probe_acc: float
    seconds: float


@dataclass(frozen=True, slots=True)
class TrainResult:
    """Checkpoints in epoch order (name, file) and the per-epoch history."""

    checkpoints: tuple[tuple[str, Path], ...]
    history: tuple[Epoch, ...]
    cached: bool


def train_key(tspec: TrainSpec, *, arch: str, fingerprint: str, mean: tuple, std: tuple, seed: int) -> str:
    """Hash of everything that determines the trained weights.

    With a constant learning rate more epochs extend a run (epochs are left out of the key); with
    the cosine schedule every step's rate depends on the total, so changing epochs starts over.
    """
    exclude = {"epochs"} if tspec.schedule == "constant" else set()
    blob = json.dumps(
        {
            "train": tspec.model_dump(mode="json", exclude=exclude),
            "arch": arch,
            "data": fingerprint,
            "mean": list(mean),
            "std": list(std),
            "seed": seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def train(
    module: nn.Module,
    train_set: Dataset,
    probe_set: Dataset,
    tspec: TrainSpec,
    *,
    key: str,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    out_dir: Path,
    seed: int,
    device: torch.device,
    progress: Progress | None = None,
) -> TrainResult:
    """Train ``module`` in place for ``tspec.epochs`` epochs, saving ``out_dir/epoch-K.pt`` after each.

    Args:
        module: freshly built network (random init); trained in place.
        train_set, probe_set: datasets of (un-normalized image in [0, 1], label).
        tspec: the network's ``train:`` block.
        key: :func:`train_key` of the inputs; a state file with another key means start over.
        mean, std: normalization applied on the device before the forward pass.
        out_dir: checkpoint folder (``output/checkpoints/<network>``).
        seed: seeds init-independent randomness (shuffling, augmentation).
        device: where to train.
        progress: called as ``progress("train <net>", step, total)``.

    Returns:
        The checkpoints and history; ``cached`` when nothing had to be trained.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    history = _kept_history(out_dir, key)
    done = len(history)

    module.to(device)
    optimizer = _optimizer(module, tspec)
    generator = torch.Generator().manual_seed(seed)
    if done:
        _resume(out_dir / f"epoch-{done}.pt", module, optimizer, generator)
        if done < tspec.epochs:
            log.info("resuming training from epoch %d", done)
    cached = done >= tspec.epochs

    loader = DataLoader(
        train_set, batch_size=tspec.batch_size, shuffle=True, generator=generator, drop_last=False
    )
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    steps_total = tspec.epochs * len(loader)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(done + 1, tspec.epochs + 1):
        t0 = time.perf_counter()
        loss, train_acc = _train_epoch(
            module,
            loader,
            optimizer,
            loss_fn,
            tspec,
            epoch=epoch,
            steps_total=steps_total,
            generator=generator,
            norm=(m, s),
            device=device,
            progress=progress,
        )
        probe_acc = evaluate(
            module, probe_set, mean=mean, std=std, device=device, batch_size=tspec.batch_size * 2
        )
        history.append(Epoch(epoch, loss, train_acc, probe_acc, time.perf_counter() - t0))
        _save_epoch(out_dir, key, history, module, optimizer, generator, epochs=tspec.epochs)
    module.eval()
    history = history[: tspec.epochs]
    checkpoints = tuple((f"epoch-{e.epoch}", out_dir / f"epoch-{e.epoch}.pt") for e in history)
    return TrainResult(checkpoints, tuple(history), cached)


def _kept_history(out_dir: Path, key: str) -> list[Epoch]:
    """The recorded epochs that still count: none (and the old checkpoints deleted) when the state file
    has another ``key``, and only up to the last epoch whose checkpoint file exists."""
    state_path = out_dir / "train.json"
    state = codecs.read_json(state_path) if state_path.is_file() else None
    if not state or state.get("key") != key:
        for old in out_dir.glob("epoch-*.pt"):
            old.unlink()
        state = {"key": key, "history": []}
    history = [Epoch(**e) for e in state["history"]]
    done = len(history)
    # Trust only epochs whose checkpoint file exists (a crash may have come between the two writes).
    while done and not (out_dir / f"epoch-{done}.pt").is_file():
        done -= 1
    return history[:done]


def _resume(
    path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> None:
    """Restore model, optimizer and RNG state from an epoch checkpoint."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    generator.set_state(ckpt["generator"])


def _train_epoch(
    module: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    tspec: TrainSpec,
    *,
    epoch: int,
    steps_total: int,
    generator: torch.Generator,
    norm: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    progress: Progress | None,
) -> tuple[float, float]:
    """One pass over ``loader`` (epoch ``epoch``, 1-based): the mean training loss and accuracy."""
    m, s = norm
    module.train()
    total_loss, correct, seen = 0.0, 0, 0
    for i, (x, y) in enumerate(loader):
        step = (epoch - 1) * len(loader) + i
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(tspec, step, steps_total)
        x, y = x.to(device), y.to(device)
        if tspec.augment:
            x = _augment(x, generator)
        out = module((x - m) / s)
        loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += float(loss.detach()) * len(y)
        correct += int((out.argmax(1) == y).sum())
        seen += len(y)
        if progress:
            progress("train", step + 1, steps_total)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def _save_epoch(
    out_dir: Path,
    key: str,
    history: list[Epoch],
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    *,
    epochs: int,
) -> None:
    """Save the last epoch of ``history``: its checkpoint, then the state file, and log it."""
    rec = history[-1]
    # checkpoint first, then the state file: a crash in between re-runs only this epoch
    ckpt = {
        "state_dict": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "epoch": rec.epoch,
    }
    _save_atomic(ckpt, out_dir / f"epoch-{rec.epoch}.pt")
    codecs.write_json(out_dir / "train.json", {"key": key, "history": [asdict(e) for e in history]})
    log.info(
        "epoch %d/%d: loss %.3f, train acc %.3f, probe acc %.3f (%.1fs)",
        rec.epoch,
        epochs,
        rec.loss,
        rec.train_acc,
        rec.probe_acc,
        rec.seconds,
    )


@torch.inference_mode()
def evaluate(
    module: nn.Module,
    dataset: Dataset,
    *,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    device: torch.device,
    batch_size: int = 128,
) -> float:
    """Top-1 accuracy of ``module`` on ``dataset``."""
    was_training = module.training
    module.eval()
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    correct = seen = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        correct += int((module((x - m) / s).argmax(1) == y).sum())
        seen += len(y)
    module.train(was_training)
    return correct / max(seen, 1)


def _learning_rate(tspec: TrainSpec, step: int, total: int) -> float:
    """The rate at a global step: a pure function of the step, so a resumed run continues exactly."""
    if tspec.schedule == "constant":
        return tspec.lr
    return 0.5 * tspec.lr * (1 + math.cos(math.pi * step / max(total, 1)))


def _optimizer(module: nn.Module, tspec: TrainSpec) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if tspec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tspec.lr, momentum=tspec.momentum, weight_decay=tspec.weight_decay)
    if tspec.optimizer == "adam":
        return torch.optim.Adam(params, lr=tspec.lr, weight_decay=tspec.weight_decay)
    return torch.optim.AdamW(params, lr=tspec.lr, weight_decay=tspec.weight_decay)


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a shift of up to 1/8 of the side (sketches: edge-padded with white)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(3), x)
    pad = max(1, h // 8)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dr, dc = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    return padded[:, :, dr : dr + h, dc : dc + w]


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
