"""Mask encoders: one (H, W) bool mask in, a portable representation out. Free functions, no model code.

- :func:`encode_rle`: COCO compressed RLE, exact.
- :func:`encode_polygons`: outer rings with their holes, lossy (pixel-centre contours, tiny specks dropped).
- :func:`encode_png`: a 1-bit (or 8-bit 0/255) grayscale PNG, exact.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Literal, TypedDict

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from pycocotools import mask as coco_mask


class Rle(TypedDict):
    """COCO compressed RLE: ``size`` is ``[height, width]``; ``counts`` runs over the mask in column-major order."""

    size: list[int]
    counts: str


class Polygon(TypedDict):
    """One connected component: its outer ring and the rings of its holes.

    Rings are flat ``[x0, y0, x1, y1, ...]`` lists (COCO style) of pixel coordinates: the centres of the boundary
    pixels of the component, closed implicitly (the last point joins the first). An island inside a hole is a
    separate :class:`Polygon`.
    """

    outer: list[float]
    holes: list[list[float]]


MIN_RING_POINTS = 3
"""Rings with fewer points (single pixels, one-pixel-wide lines) are not polygons and are dropped."""


def encode_rle(mask: npt.NDArray[np.bool_]) -> Rle:
    """COCO compressed RLE of a (H, W) mask, decodable with ``pycocotools.mask.decode``."""
    _check_mask(mask)
    encoded = coco_mask.encode(_column_major(mask))
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": encoded["counts"].decode("ascii")}


def decode_rle(rle: Rle) -> npt.NDArray[np.bool_]:
    """Inverse of :func:`encode_rle`."""
    encoded = {"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}
    with warnings.catch_warnings():
        # pycocotools' Cython decoder trips numpy 2's __array__(copy=...) deprecation; harmless.
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = coco_mask.decode(encoded)
    return np.asarray(decoded, dtype=bool)


def encode_polygons(mask: npt.NDArray[np.bool_]) -> list[Polygon]:
    """Polygons with holes of a (H, W) mask, one per 8-connected component, from OpenCV's two-level hierarchy."""
    _check_mask(mask)
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    links = hierarchy[0]  # per contour: next sibling, previous sibling, first child, parent
    polygons: list[Polygon] = []
    for index, contour in enumerate(contours):
        if links[index][3] != -1 or len(contour) < MIN_RING_POINTS:
            continue  # a hole (handled with its parent) or a speck
        holes: list[list[float]] = []
        child = int(links[index][2])
        while child != -1:
            if len(contours[child]) >= MIN_RING_POINTS:
                holes.append(_flatten(contours[child]))
            child = int(links[child][0])
        polygons.append({"outer": _flatten(contour), "holes": holes})
    return polygons


def encode_png(mask: npt.NDArray[np.bool_], bits: Literal[1, 8] = 1) -> bytes:
    """PNG bytes of a (H, W) mask: 1-bit grayscale, or 8-bit grayscale with 0 and 255."""
    _check_mask(mask)
    if bits == 1:
        image = Image.fromarray(np.ascontiguousarray(mask))  # bool arrays become mode "1"
    else:
        image = Image.fromarray(np.where(mask, np.uint8(255), np.uint8(0)))  # uint8 → mode "L"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _flatten(contour: npt.NDArray[Any]) -> list[float]:
    return [float(v) for v in contour.reshape(-1)]


def _column_major(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """``mask`` as Fortran-ordered uint8, as pycocotools encodes it. OpenCV's transpose is blocked and vectorised:
    ~0.1 ms for 1024×768 against ~1.4 ms for numpy's strided copy (``np.asfortranarray``)."""
    if mask.size == 0 or mask.flags.f_contiguous:  # OpenCV refuses an empty array; a Fortran one is a cast
        return np.asfortranarray(mask, dtype=np.uint8)
    transposed = cv2.transpose(np.ascontiguousarray(mask).view(np.uint8))
    return np.asarray(transposed, dtype=np.uint8).T  # (H, W), its columns contiguous


def _check_mask(mask: npt.NDArray[np.bool_]) -> None:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.bool_:
        shape = getattr(mask, "shape", None)
        dtype = getattr(mask, "dtype", type(mask).__name__)
        raise ValueError(f"a mask must be a 2-D bool array, got shape {shape} dtype {dtype}")
