"""The optimization of one chunk of units: Adam steps on the image parameters, and the chunk size.

:func:`_optimize` draws each unit's randomness from its own stream and runs the steps; :class:`_Adam`
is the element-wise update; :func:`_auto_chunk` sizes a chunk to the memory budget.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from sitegen.analyses.featvis._param import _augment, _Image, _to_uint8, _transform_params, _tv

# Bytes of activations (forward saved + backward) per unit allowed in one chunk when batch_units is None.
_CPU_BUDGET = 1 << 30
_MAX_AUTO_CHUNK = 256

def _optimize(
    image: _Image,
    objective: Callable[[Tensor, Tensor], Tensor],
    units: list[int],
    seed: int,
    steps: int,
    lr: float,
    transforms: bool,
    tv: float,
    l2: float,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chunk: images uint8[B, S, S, 3], start and final objectives float[B]."""
    inits, moves = [], []
    for u in units:
        rng = np.random.default_rng([seed, u])  # per-unit stream: chunking never changes a unit's image
        inits.append(image.init(rng))
        moves.append(_transform_params(rng, steps, image.size))
    p = torch.from_numpy(np.stack(inits)).to(device).requires_grad_(True)
    moves_t = torch.from_numpy(np.stack(moves)).float().to(device)  # [B, steps, 4]; MPS has no float64
    idx = torch.tensor(units, device=device)

    with torch.no_grad():
        start = objective(_to_uint8(image(p)) / 255, idx)
    adam = _Adam(p, lr)
    for step in range(steps):
        p.grad = None
        x = image(p)
        seen = _augment(x, moves_t[:, step]) if transforms else x
        # SUM over units: each image's gradient is exactly its own unit's gradient
        loss = -objective(seen, idx).sum()
        if tv:
            loss = loss + tv * _tv(x).sum()
        if l2:
            loss = loss + l2 * (x - 0.5).square().flatten(1).mean(1).sum()
        loss.backward()
        adam.step()
    with torch.no_grad():
        final_img = _to_uint8(image(p))
        final = objective(final_img / 255, idx)
    pixels = final_img.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
    return pixels, start.float().cpu().numpy(), final.float().cpu().numpy()


class _Adam:
    """Adam (Kingma & Ba 2015) on one tensor, as ``torch.optim.Adam`` with its defaults computes it.

    Element-wise, so batch elements never interact. The update is ``torch.optim.Adam(fused=True)``
    (one pass instead of six, 3x faster on CPU; the first optimizer of a process imports
    ``torch._dynamo``, a few seconds once per build) where this torch and device have the fused
    kernel, else the same formula written out (equal up to float rounding: ``sqrt(v) / sqrt(1 - b2^t)``
    vs ``sqrt(v / (1 - b2^t))``; tests/test_featvis.py checks both against ``torch.optim.Adam``).
    """

    def __init__(
        self,
        p: Tensor,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        fused: bool = True,
    ) -> None:
        self.p, self.lr, self.betas, self.eps = p, lr, betas, eps
        self.t = 0
        self.opt: torch.optim.Adam | None = None
        if fused:
            try:
                self.opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps, fused=True)
            except (RuntimeError, TypeError, ValueError):  # no fused kernel here: the written-out form
                self.opt = None
        if self.opt is None:
            self.m = torch.zeros_like(p)
            self.v = torch.zeros_like(p)

    @property
    def fused(self) -> bool:
        """Whether the steps run torch's fused Adam."""
        return self.opt is not None

    @torch.no_grad()
    def step(self) -> None:
        assert self.p.grad is not None
        self.t += 1
        if self.opt is not None:
            self.opt.step()
            return
        b1, b2 = self.betas
        g = self.p.grad
        self.m.lerp_(g, 1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v / (1 - b2**self.t)).sqrt_().add_(self.eps)
        self.p.addcdiv_(self.m, denom, value=-self.lr / (1 - b1**self.t))


def _auto_chunk(forward: Callable[[Tensor], Tensor], size: int, device: torch.device) -> int:
    """Units per chunk: activation memory of one truncated forward × 4 (saved + grads) within a budget."""
    counted = [0]

    def count(module: torch.nn.Module, args: object, out: object) -> None:
        if isinstance(out, Tensor):
            counted[0] += out.numel()

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        with torch.no_grad():
            forward(torch.zeros(1, 3, size, size, device=device))
    finally:
        handle.remove()
    per_unit = max(1, 4 * 4 * (counted[0] + 4 * 3 * size * size))
    if device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] // 2
    else:
        budget = _CPU_BUDGET
    return int(max(1, min(_MAX_AUTO_CHUNK, budget // per_unit)))
