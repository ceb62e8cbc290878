"""Decoding images the same way everywhere (shards, folders, query images, ``preprocess``).

PIL's ``convert("RGB")`` clips instead of scaling for the high-bit-depth modes: a 16-bit PNG
pixel 40000/65535 (61% grey) becomes 255 (white), a float image in [0, 1] becomes black.
:func:`to_rgb` scales every mode to 8 bits first. Images that would decode to more pixels than
PIL's decompression-bomb limit, unreadable files and missing files raise :class:`BadImage`
with a reason that the callers count (a folder or a shard skips the image, a single query image
is an error).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

# PIL modes whose values are not 8-bit: their full scale, mapped to 255
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class BadImage(Exception):
    """An image that cannot be used: ``reason`` is one of ``missing_image``,
    ``corrupt_image``, ``image_too_large``."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _grey(values: np.ndarray, full_scale: float) -> Image.Image:
    # floor(v * 255 / full_scale): 40000/65535 -> 155, 65535 -> 255, as 8-bit libraries do
    scaled = np.floor(np.clip(values.astype(np.float64), 0, full_scale) * (255.0 / full_scale))
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB with its values scaled, not clipped.

    16-bit greys (``I;16*``) and 32-bit integers (``I``, which PIL uses for 16-bit PNG/TIFF
    data) are read on a 0-65535 scale; floats (``F``) on 0-1 when they stay within it, else
    0-255. Transparent images are composited on white (what a viewer shows; dropping alpha
    would reveal whatever colour the transparent pixels happen to hold, often black).
    Palette, CMYK, LAB, ... go through PIL's own conversion.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT or mode == "I":
        return _grey(np.asarray(image), 65535.0).convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        return _grey(values, 1.0 if values.max(initial=0.0) <= 1.0 else 255.0).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(source: str | Path | bytes, what: str | None = None) -> Image.Image:
    """Open, fully decode and convert an image file (or its bytes) -> 8-bit RGB.

    Raises :class:`BadImage` (``what`` names it in the message, default the path).
    """
    what = what or (str(source) if not isinstance(source, bytes) else "image")
    try:
        with warnings.catch_warnings():
            # between 1x and 2x PIL's pixel limit PIL only warns: treat that as too large too,
            # a 100-megapixel image is not something to decode for a 224 px crop
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                im.load()
                return to_rgb(im)
    except FileNotFoundError as err:
        raise BadImage("missing_image", f"{what}: no such file") from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise BadImage("image_too_large", f"{what}: {err}") from err
    except Exception as err:  # noqa: BLE001 - PIL raises many types for a damaged file
        raise BadImage("corrupt_image", f"{what}: {type(err).__name__}: {err}") from err
