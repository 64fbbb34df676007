"""Synthetic test images (nothing is downloaded)."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
from PIL import Image


def scene(width: int = 320, height: int = 240, seed: int = 0) -> np.ndarray:
    """A non-square RGB scene: noise, an ellipse and a rectangle (non-square catches h/w swaps)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels[((xx - width * 0.4) / (width * 0.2)) ** 2 + ((yy - height * 0.5) / (height * 0.25)) ** 2 <= 1] = (
        230,
        190,
        40,
    )
    pixels[height // 6 : height // 3, width * 3 // 4 : width * 9 // 10] = (40, 200, 90)
    return pixels


def png_bytes(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bomb_png(side: int = 30_000) -> bytes:
    """A real, valid side×side PNG (1-bit grayscale, all black): ~100 KB on disk, gigabytes once decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
