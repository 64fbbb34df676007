from __future__ import annotations

import io
from typing import Literal

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from worker.encoders import decode_rle, encode_png, encode_polygons, encode_rle


def _random_mask(height: int = 37, width: int = 53, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width)) > 0.6


def _ring(height: int = 40, width: int = 50) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    mask[5:35, 10:40] = True
    mask[15:25, 20:30] = False
    return mask


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_rle_decodes_back_exactly_with_pycocotools() -> None:
    mask = _random_mask()
    rle = encode_rle(mask)
    assert rle["size"] == [37, 53]
    assert isinstance(rle["counts"], str)
    decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert decoded.shape == mask.shape
    assert np.array_equal(decoded.astype(bool), mask)
    assert np.array_equal(decode_rle(rle), mask)


def test_rle_is_column_major_like_coco() -> None:
    mask = np.zeros((2, 3), dtype=bool)
    mask[0, 1] = True  # column-major runs: 2 zeros (column 0), then 1 one
    rle = encode_rle(mask)
    assert coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()}) == 1
    assert coco_mask.toBbox({"size": rle["size"], "counts": rle["counts"].encode()}).tolist() == [1, 0, 1, 1]


def test_rle_is_the_same_for_every_memory_layout_of_a_mask() -> None:
    """The encoder transposes a C-ordered mask itself (OpenCV); any layout gives pycocotools' own encoding."""
    mask = _random_mask(769, 1031, seed=3)
    expected = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))["counts"].decode()
    layouts = {
        "C": mask,
        "Fortran": np.asfortranarray(mask),
        "strided view": np.random.default_rng(4).random((1538, 2062))[::2, ::2] > 0.6,
        "1 row": mask[:1],
        "1 column": mask[:, :1],
        "empty": mask[:0],
    }
    for name, layout in layouts.items():
        want = coco_mask.encode(np.asfortranarray(layout, dtype=np.uint8))["counts"].decode()
        assert encode_rle(layout)["counts"] == want, name
    assert encode_rle(mask)["counts"] == expected


def test_rle_of_empty_and_full_masks() -> None:
    for mask in (np.zeros((4, 6), dtype=bool), np.ones((4, 6), dtype=bool)):
        assert np.array_equal(decode_rle(encode_rle(mask)), mask)


def test_ring_yields_one_outer_ring_and_one_hole() -> None:
    polygons = encode_polygons(_ring())
    assert len(polygons) == 1
    (polygon,) = polygons
    assert len(polygon["holes"]) == 1
    outer = np.array(polygon["outer"]).reshape(-1, 2)
    hole = np.array(polygon["holes"][0]).reshape(-1, 2)
    assert (outer.min(axis=0).tolist(), outer.max(axis=0).tolist()) == ([10, 5], [39, 34])
    # the hole ring runs through the foreground pixels bordering the hole
    assert hole.min(axis=0).tolist() == [19, 14]
    assert hole.max(axis=0).tolist() == [30, 25]


def test_polygons_separate_components_and_islands_in_holes() -> None:
    mask = _ring()
    mask[18:22, 23:27] = True  # an island inside the hole
    mask[0:3, 45:49] = True  # a separate blob
    polygons = encode_polygons(mask)
    assert len(polygons) == 3
    assert sorted(len(p["holes"]) for p in polygons) == [0, 0, 1]


def test_polygons_drop_specks_and_handle_empty_masks() -> None:
    assert encode_polygons(np.zeros((5, 5), dtype=bool)) == []
    speck = np.zeros((5, 5), dtype=bool)
    speck[2, 2] = True
    assert encode_polygons(speck) == []


def test_polygons_fill_back_to_the_mask() -> None:
    import cv2

    mask = _ring()
    canvas = np.zeros(mask.shape, dtype=np.uint8)
    for polygon in encode_polygons(mask):
        rings = [polygon["outer"], *polygon["holes"]]
        contours = [np.array(r, dtype=np.int32).reshape(-1, 1, 2) for r in rings]
        cv2.drawContours(canvas, contours[:1], -1, 1, thickness=cv2.FILLED)
        cv2.drawContours(canvas, contours[1:], -1, 0, thickness=cv2.FILLED)
        cv2.drawContours(canvas, contours[1:], -1, 1, thickness=1)  # hole rings are foreground pixels
    assert np.array_equal(canvas.astype(bool), mask)


@pytest.mark.parametrize("bits", [1, 8])
def test_png_round_trips(bits: Literal[1, 8]) -> None:
    mask = _random_mask(seed=3)
    data = encode_png(mask, bits=bits)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == ("1" if bits == 1 else "L")
        pixels = np.array(image)
    assert np.array_equal(pixels.astype(bool), mask)


def test_encoders_refuse_non_bool_masks() -> None:
    with pytest.raises(ValueError, match="2-D bool"):
        encode_rle(np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="2-D bool"):
        encode_png(np.zeros((1, 3, 3), dtype=bool))
