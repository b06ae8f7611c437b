"""reconstruct_topk's uint8 loading (issue 13, item 2): the same bits as float images, the same tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_reconstruct import _loaded, _TinyClassifier, _TopK

from sitegen.analyses.reconstruct import _topk, reconstruct_topk
from sitegen.analyses.reconstruct._topk import _load_pixels


def test_uint8_conversion_is_the_probe_splits_for_every_byte() -> None:
    """All 256 values, through the real helper: x / 255 in float32 equals x.float().div_(255) bit for bit."""
    raw = torch.arange(256, dtype=torch.uint8).repeat(3 * 4 * 2)[: 3 * 16 * 16].view(3, 16, 16)
    raw[0, 0, :] = torch.arange(16, dtype=torch.uint8) * 17  # every value somewhere
    images = [raw, raw.flip(-1).contiguous(), (255 - raw).contiguous()]
    buffer: list[torch.Tensor] = []
    got = _load_pixels(lambda i: images[i], [2, 0, 1], 4, torch.device("cpu"), buffer)
    want = torch.stack([images[i].float().div_(255) for i in (2, 0, 1)])
    assert got.dtype == torch.float32 and got.shape == (3, 3, 16, 16)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    every = torch.arange(256, dtype=torch.uint8).view(1, 16, 16).expand(3, 16, 16).contiguous()
    got = _load_pixels(lambda i: every, [0], 4, torch.device("cpu"), buffer)  # the buffer is reused
    assert torch.equal(got[0].view(torch.int32), every.float().div_(255).view(torch.int32))


@pytest.mark.parametrize(
    ("layer", "method"), [("conv3", "deconvnet"), ("conv1", "guided"), ("fc1", "gradient")]
)
def test_pixels_give_the_same_tiles_as_float_images(
    monkeypatch: pytest.MonkeyPatch, layer: str, method: str
) -> None:
    """Crop and whole-image layers, several image blocks: byte-identical tiles either way."""
    monkeypatch.setattr(_topk, "_IMAGE_BLOCK", 2)  # read there, by reconstruct_topk
    torch.manual_seed(0)
    loaded = _loaded(_TinyClassifier().eval(), 32)
    raw = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    info = loaded.layer(layer)
    rng = np.random.default_rng(1)
    images = rng.integers(-1, 6, size=(info.units, 4))
    side = info.shape[-1] if len(info.shape) == 3 else 1
    rows = rng.integers(0, side, size=images.shape).astype(np.int32)
    cols = rng.integers(0, side, size=images.shape).astype(np.int32)
    units = list(range(info.units))[::-1]
    common = {"method": method, "image_size": 32, "batch_size": 3}
    topk = _TopK(images, rows, cols)
    plain = reconstruct_topk(loaded, lambda i: raw[i].float().div_(255), info, topk, units, **common)

    def no_float(i: int) -> torch.Tensor:
        raise AssertionError("with pixels, the float images are not loaded")

    fast = reconstruct_topk(loaded, no_float, info, topk, units, pixels=lambda i: raw[i], **common)
    assert isinstance(plain, np.ndarray) and isinstance(fast, np.ndarray)
    assert np.array_equal(plain, fast)
    assert (plain != 128).any(), "something was drawn"


def test_scratch_buffer_is_reused_across_calls_with_the_same_tiles() -> None:
    """A layer's chunks share one image buffer (no fresh page faults per chunk); tiles unchanged."""
    torch.manual_seed(0)
    loaded = _loaded(_TinyClassifier().eval(), 32)
    raw = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    info = loaded.layer("conv3")
    rng = np.random.default_rng(2)
    images = rng.integers(0, 6, size=(info.units, 3))
    rows = rng.integers(0, 7, size=images.shape).astype(np.int32)
    cols = rng.integers(0, 7, size=images.shape).astype(np.int32)
    topk = _TopK(images, rows, cols)
    units = list(range(info.units))
    whole = reconstruct_topk(loaded, lambda i: raw[i].float().div_(255), info, topk, units, image_size=32)
    scratch: list[torch.Tensor] = []
    parts, pointers = [], []
    for c0 in range(0, len(units), 3):
        out = reconstruct_topk(
            loaded,
            lambda i: raw[i].float(),
            info,
            topk,
            units[c0 : c0 + 3],
            image_size=32,
            pixels=lambda i: raw[i],
            scratch=scratch,
        )
        parts.append(out)
        pointers.append(scratch[0].data_ptr())
    assert np.array_equal(np.concatenate(parts), whole)
    assert len(set(pointers)) == 1, "one buffer for every chunk"
