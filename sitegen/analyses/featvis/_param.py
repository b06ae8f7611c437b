"""The image of feature visualization: its parametrization, its random transforms and its penalties.

:class:`_Image` maps raw parameters (a 1/f-scaled spectrum or pre-sigmoid pixels) to [0, 1] images,
colour-decorrelated (lucent ``param/color.py``, ``param/spatial.py``); :func:`_transform_params` and
:func:`_augment` are the per-step jitter / scale / rotation (transformation robustness); :func:`_tv`
and :func:`_to_uint8` the total-variation penalty and the quantization of the returned image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Square root of ImageNet's colour correlation matrix (Lucid/lucent param/color.py), normalized so its
# largest column has norm 1.
_COLOR_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
_COLOR_NORMALIZED = _COLOR_SVD_SQRT / np.linalg.norm(_COLOR_SVD_SQRT, axis=0).max()

# Lucid's fft_image divides the image by this "magic" constant (less saturated images).
_FFT_MAGIC = 4.0
_INIT_SD = 0.01  # lucent's default sd of the initial spectrum / pixels
# Pixel parametrization: a 3×3 Gaussian of σ = 0.5 px after the sigmoid (Yosinski et al. 2015 blur with
# σ 0.5-1 px). On a small net at 24-32 px, σ = 0.7, or an in-place blur of the parameters every 4 steps
# as Yosinski does, cost half the reachable activation of some units.
_BLUR_SIGMA = 0.5

# lucent transform.standard_transforms: random_scale([1 + (i - 5) / 50 for i in range(11)]),
# random_rotate(list(range(-10, 11)) + 5 * [0]); jitter(8) then jitter(4) at 128 px ≈ ±6 px.
_SCALES = np.array([1 + (i - 5) / 50 for i in range(11)], dtype=np.float64)
_ANGLES = np.array(list(range(-10, 11)) + 5 * [0], dtype=np.float64)
_JITTER_PER_128 = 6.0


class _Image:
    """The parametrization: raw parameters [B, ...] → images [B, 3, size, size] in [0, 1]."""

    def __init__(
        self, size: int, param: str, decorrelate: bool, grayscale: bool, device: torch.device
    ) -> None:
        self.size = size
        self.param = param
        self.channels = 1 if grayscale else 3
        # a grey image has no colours to decorrelate; mixed as color @ [3, H * W] (einsum: 3x slower)
        self.color = None if grayscale or not decorrelate else torch.from_numpy(_COLOR_NORMALIZED).to(device)
        if param == "fourier":
            freqs = _rfft2d_freqs(size, size)
            # 1/f amplitude: lucent fft_image with decay_power=1; Lucid's division of the image by 4 done
            # here (the same numbers: a power of two commutes exactly with the linear irfft)
            scale = 1.0 / np.maximum(freqs, 1.0 / size) / _FFT_MAGIC
            self.scale = torch.from_numpy(scale.astype(np.float32))[None, None, :, :, None].to(device)
            self.shape: tuple[int, ...] = (self.channels, *freqs.shape, 2)
        else:
            self.shape = (self.channels, size, size)
            w = math.exp(-1 / (2 * _BLUR_SIGMA**2))
            self.blur = torch.tensor([w, 1.0, w], device=device) / (1 + 2 * w)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        return (rng.standard_normal(self.shape) * _INIT_SD).astype(np.float32)

    def __call__(self, p: Tensor) -> Tensor:
        if self.param == "fourier":
            spectrum = torch.view_as_complex((self.scale * p).contiguous())
            x = torch.fft.irfftn(spectrum, s=(self.size, self.size), norm="ortho")
        else:
            x = p
        if self.color is not None:
            x = torch.matmul(self.color, x.flatten(2)).view_as(x)
        x = torch.sigmoid(x)
        if self.param == "pixel":
            c, k = self.channels, self.blur
            x = F.pad(x, (1, 1, 1, 1), mode="replicate")
            x = F.conv2d(x, k.view(1, 1, 1, 3).expand(c, 1, 1, 3), groups=c)
            x = F.conv2d(x, k.view(1, 1, 3, 1).expand(c, 1, 3, 1), groups=c)
        return x.expand(-1, 3, -1, -1)


def _rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequency magnitude of each ``rfft2`` coefficient of an ``h × w`` image (rows × (w // 2 + 1))."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


def _transform_params(rng: np.random.Generator, steps: int, size: int) -> np.ndarray:
    """Per-step ``(row shift px, col shift px, scale, angle degrees)`` of one unit: float64[steps, 4]."""
    jitter = max(1, round(_JITTER_PER_128 * size / 128))
    shift = rng.integers(-jitter, jitter + 1, size=(steps, 2))
    scale = rng.choice(_SCALES, size=steps)
    angle = rng.choice(_ANGLES, size=steps)
    return np.column_stack([shift, scale, angle]).astype(np.float64)


def _augment(x: Tensor, params: Tensor) -> Tensor:
    """Jitter, scale and rotate each image of ``x`` by its own ``params`` [B, 4]; grey fill."""
    size = x.shape[-1]
    drow, dcol, scale, angle = params.unbind(1)
    rad = angle * (math.pi / 180)
    cos, sin = torch.cos(rad) / scale, torch.sin(rad) / scale
    # theta maps output to input coordinates in [-1, 1] (x = col, y = row); 1 px = 2 / size.
    theta = torch.stack(
        [
            torch.stack([cos, -sin, 2 * dcol / size], 1),
            torch.stack([sin, cos, 2 * drow / size], 1),
        ],
        1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # sample (x - 0.5) with zero padding: whatever comes from outside the image is grey
    return F.grid_sample(x - 0.5, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 0.5


def _tv(x: Tensor) -> Tensor:
    """Total variation per image: mean absolute difference of row and column neighbours."""
    rows = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    cols = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return rows + cols


def _to_uint8(x: Tensor) -> Tensor:
    return (x.detach().clamp(0, 1) * 255).round()
