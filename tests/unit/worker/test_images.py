from __future__ import annotations

import io
import struct
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from tasks.errors import ImageTooLargeError, InvalidImageError, UnsupportedMediaError
from worker.images import decode_image

LIMIT = 100_000_000


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height RGB pixels, followed by a tiny (far too short) IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _encode(array: np.ndarray, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_png_decodes_to_rgb_uint8() -> None:
    original = _rgb(12, 17)
    decoded = decode_image(_encode(original, "PNG"), LIMIT)
    assert decoded.dtype == np.uint8
    assert decoded.shape == (12, 17, 3)
    assert np.array_equal(decoded, original)
    assert decoded.flags.writeable


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_other_modes_become_rgb(mode: str) -> None:
    image = Image.fromarray(_rgb(8, 9)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue(), LIMIT)
    assert decoded.shape == (8, 9, 3)
    assert np.array_equal(decoded, np.asarray(image.convert("RGB")))


def test_sixteen_bit_grayscale_keeps_its_high_byte() -> None:
    wide = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)
    decoded = decode_image(_encode(wide, "PNG"), LIMIT)
    assert decoded.shape == (12, 10, 3)
    assert np.array_equal(decoded[:, :, 0], (wide >> 8).astype(np.uint8))
    assert np.array_equal(decoded[:, :, 0], decoded[:, :, 2])


def test_exif_orientation_is_applied() -> None:
    original = _rgb(4, 7)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    decoded = decode_image(_encode(original, "PNG", exif=exif), LIMIT)
    assert decoded.shape == (7, 4, 3)
    assert np.array_equal(decoded, np.rot90(original, k=-1))


def test_jpeg_decodes() -> None:
    decoded = decode_image(_encode(_rgb(32, 48), "JPEG", quality=90), LIMIT)
    assert decoded.shape == (32, 48, 3)


def test_huge_header_is_refused_before_decoding() -> None:
    data = _png_header_claiming(30_000, 30_000)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImageTooLargeError, match=f"limit is {LIMIT} pixels"):
            decode_image(data, LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 10 * 1024 * 1024  # decoding would need 2.7 GB


def test_our_limit_applies_below_pillows_and_without_its_warning() -> None:
    data = _png_header_claiming(12_000, 10_000)  # 120 Mpx: above Pillow's warning threshold, below its error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageTooLargeError, match=r"12000x10000 = 120000000 pixels; the limit is 100000000"):
            decode_image(data, LIMIT)


def test_small_limit_refuses_ordinary_images() -> None:
    with pytest.raises(ImageTooLargeError, match="limit is 100 pixels"):
        decode_image(_encode(_rgb(11, 10), "PNG"), 100)
    assert decode_image(_encode(_rgb(10, 10), "PNG"), 100).shape == (10, 10, 3)


def test_text_is_unsupported_media() -> None:
    with pytest.raises(UnsupportedMediaError):
        decode_image(b"hello, this is not an image\n" * 10, LIMIT)


def test_empty_bytes_are_unsupported_media() -> None:
    with pytest.raises(UnsupportedMediaError):
        decode_image(b"", LIMIT)


def test_truncated_jpeg_is_invalid() -> None:
    data = _encode(_rgb(64, 64), "JPEG", quality=95)
    with pytest.raises(InvalidImageError):
        decode_image(data[: len(data) // 2], LIMIT)


def test_short_idat_png_is_invalid() -> None:
    with pytest.raises(InvalidImageError):
        decode_image(_png_header_claiming(40, 30), LIMIT)


def test_corrupt_png_is_invalid() -> None:
    data = bytearray(_encode(_rgb(16, 16), "PNG"))
    data[60:80] = b"\xff" * 20  # inside IDAT
    with pytest.raises(InvalidImageError):
        decode_image(bytes(data), LIMIT)
