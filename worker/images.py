"""Image bytes → (H, W, 3) uint8 RGB array, with the size checked from the header before anything is decoded."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from tasks.errors import ImageTooLargeError, InvalidImageError, UnsupportedMediaError

SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
"""Pillow plugins we let parse untrusted bytes (no EPS: it runs Ghostscript). The first frame of a GIF is used."""

_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


def decode_image(data: bytes, max_pixels: int) -> npt.NDArray[np.uint8]:
    """Decode an image file to an (H, W, 3) uint8 RGB array, with its EXIF orientation applied.

    Raises :class:`ImageTooLargeError` when the header announces more than ``max_pixels`` pixels (before any pixel
    data is decoded), :class:`UnsupportedMediaError` when the bytes are not a supported image format, and
    :class:`InvalidImageError` when they are one but cannot be decoded (truncated, corrupt).
    """
    with warnings.catch_warnings():
        # Pillow warns above its own (process-global) limit; ours is checked from the header below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        except Image.DecompressionBombError as e:
            raise ImageTooLargeError(_too_large_message(None, max_pixels)) from e
        except UnidentifiedImageError as e:
            raise UnsupportedMediaError(f"not a supported image (formats: {', '.join(SUPPORTED_FORMATS)})") from e
        except _DECODE_ERRORS as e:
            raise InvalidImageError(f"cannot read the image header: {e}") from e
        with image:
            width, height = image.size
            if width <= 0 or height <= 0:
                raise InvalidImageError(f"the image has an empty size {width}x{height}")
            if width * height > max_pixels:
                raise ImageTooLargeError(_too_large_message((width, height), max_pixels))
            try:
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
            except Image.DecompressionBombError as e:  # e.g. a GIF frame larger than its header said
                raise ImageTooLargeError(_too_large_message(None, max_pixels)) from e
            except _DECODE_ERRORS as e:
                raise InvalidImageError(f"cannot decode the {image.format} image: {e}") from e


def _to_rgb(image: Image.Image) -> npt.NDArray[np.uint8]:
    """A writable (H, W, 3) uint8 copy (torch warns on read-only arrays)."""
    if image.mode in _WIDE_GRAY_MODES:
        # 16-bit grayscale: keep the high byte (Pillow's convert("RGB") would clip everything above 255 to white).
        wide = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
        gray = (wide >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, np.newaxis], 3, axis=2)
    return np.array(image.convert("RGB"), dtype=np.uint8)


def _too_large_message(size: tuple[int, int] | None, max_pixels: int) -> str:
    if size is None:
        announced = f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels (Pillow's own hard limit)"
    else:
        announced = f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels"
    return f"image too large: {announced}; the limit is {max_pixels} pixels (SAMQ_WORKER_MAX_IMAGE_PIXELS)"
