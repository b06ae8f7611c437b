"""Pixels: which files are images, decoding one to square uint8 RGB, and the sources a split reads.

A split (:class:`~sitegen.data.bundle.ImageSet`) names its images by id and asks its source for
the pixels: :class:`_FolderSource` decodes ``root / id`` with :func:`load_image`,
:class:`_DoodleSource` draws ``<class>/<index>`` with :mod:`sitegen.doodles`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sitegen import doodles
from sitegen.errors import DataError

#: Suffixes (lower-cased) of files treated as images in ImageFolder trees.
IMAGE_EXTENSIONS = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".webp"})
#: Bump when preprocessing (resize, crop, colour conversion) changes pixels: part of the fingerprint.
FORMAT = 1

# What Pillow raises on a corrupt, truncated or hostile file, depending on the format plugin.
_UNREADABLE = (
    OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, Image.DecompressionBombError,
)


def load_image(path: str | Path, image_size: int) -> np.ndarray:
    """Decode one file to uint8 RGB ``[image_size, image_size, 3]``.

    Any mode becomes RGB: grayscale and 1-bit are replicated, palette is looked up, transparency
    (RGBA, LA, palette with a transparent colour) is composited on white, CMYK and other colour
    spaces are converted, 16-bit and float images are scaled to 8 bits. EXIF orientation is applied.
    Then the shorter side is resized to ``image_size`` (bilinear, antialiased) and the centre cropped.

    Raises:
        OSError, ValueError, SyntaxError, ...: whatever Pillow raises on a corrupt file.
    """
    with Image.open(path) as im:
        im.draft(im.mode, (image_size, image_size))  # JPEG: decode at a reduced scale, still >= size
        im = ImageOps.exif_transpose(im)
        return np.array(_square(_to_rgb(im), image_size), dtype=np.uint8)  # a writable copy


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Pillow's convert() clips these at 255 instead of scaling: scale by the range the values use
        a = np.asarray(im, dtype=np.float64)
        peak = a.max(initial=0)
        if im.mode.startswith("I;16") or peak > 255:
            top = 65535.0
        elif im.mode == "F" and peak <= 1:
            top = 1.0
        else:
            top = 255.0
        im = Image.fromarray((np.clip(a / top, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    elif im.mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def _square(im: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size``, then the centre ``size`` x ``size`` (torchvision Resize + CenterCrop)."""
    w, h = im.size
    if min(w, h) != size:
        short, long = (w, h) if w <= h else (h, w)
        long = max(size, int(size * long / short))
        im = im.resize((size, long) if w <= h else (long, size), Image.Resampling.BILINEAR)
        w, h = im.size
    left, top = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return im.crop((left, top, left + size, top + size)) if (w, h) != (size, size) else im


# --- image sources -----------------------------------------------------------------------------------


# Sources travel to DataLoader workers by pickle: plain frozen dataclasses (frozen + slots only
# unpickles from Python 3.10.1 on).
@dataclass(frozen=True)
class _FolderSource:
    root: Path
    image_size: int

    def load(self, image_id: str) -> np.ndarray:
        path = self.root / image_id
        try:
            return load_image(path, self.image_size)
        except _UNREADABLE as e:  # it passed verify() while indexing, then failed to decode
            raise DataError(f"{path}: cannot decode image ({e}); replace or delete the file") from None


@dataclass(frozen=True)
class _DoodleSource:
    seed: int
    image_size: int

    def load(self, image_id: str) -> np.ndarray:
        name, _, index = image_id.rpartition("/")
        img = doodles.make_doodle(name, int(index), self.image_size, self.seed)
        return np.array(img.convert("RGB"), dtype=np.uint8)


_Source = _FolderSource | _DoodleSource
