"""annotated.png: masks tinted exactly where they are, prompts and captioned boxes drawn, the rest untouched."""

from __future__ import annotations

import io

import numpy as np
import pytest
import supervision as sv
from PIL import Image

from tests.support.images import scene
from worker.annotate import MASK_OPACITY, NEGATIVE, POSITIVE, Canvas

HEIGHT, WIDTH = 120, 160


def decoded(canvas: Canvas) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(canvas.png())).convert("RGB"))


def rectangle(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_a_mask_is_tinted_in_its_palette_colour_exactly_where_it_is() -> None:
    image = scene(WIDTH, HEIGHT, seed=3)
    mask = rectangle(20, 50, 30, 70)
    mask[30:35, 40:45] = False  # a hole stays untouched too
    canvas = Canvas(image)
    canvas.mask(mask, 1)
    out = decoded(canvas)

    assert out.shape == image.shape
    assert np.array_equal(np.any(out != image, axis=2), mask)
    colour = np.array(sv.ColorPalette.DEFAULT.by_idx(1).as_rgb(), dtype=float)
    blend = MASK_OPACITY * colour + (1 - MASK_OPACITY) * image[mask].astype(float)
    assert np.abs(out[mask].astype(float) - blend).max() <= 1  # in RGB (supervision draws on BGR)


def test_masks_drawn_one_by_one_each_keep_their_colour_and_the_input_is_not_modified() -> None:
    image = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    first, second = rectangle(10, 30, 10, 30), rectangle(60, 90, 100, 150)
    canvas = Canvas(image)
    canvas.mask(first, 0)
    canvas.mask(second, 5)
    canvas.mask(np.zeros((HEIGHT, WIDTH), dtype=bool), 2)  # an empty mask draws nothing
    out = decoded(canvas)

    assert np.all(image == 128)
    assert len(np.unique(out[first], axis=0)) == len(np.unique(out[second], axis=0)) == 1
    assert not np.array_equal(out[first][0], out[second][0])
    assert not np.any(out[~(first | second)] != 128)
    with pytest.raises(ValueError, match="mask is"):
        canvas.mask(np.zeros((WIDTH, HEIGHT), dtype=bool), 0)


def test_boxes_captions_and_prompts_are_drawn_near_them_and_nowhere_far() -> None:
    image = np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)
    canvas = Canvas(image)
    boxes = np.array([[40, 50, 90, 100], [0, 0, 0, 0]], dtype=np.float32)  # the empty box is skipped
    canvas.prompts([(20.0, 20.0, True), (140.0, 20.0, False)], [(100.0, 60.0, 150.0, 110.0)])
    canvas.boxes(boxes, [0, 1], ["car 0.87", "#1 0.10"])
    out = decoded(canvas)

    assert np.array_equal(out[20, 20], POSITIVE) and np.array_equal(out[20, 140], NEGATIVE)
    assert np.any(out[50, 40:90] != 128)  # the box's top edge
    assert np.any(out[60, 100:150] != 128)  # the prompt box's top edge
    assert np.any(out[30:50, 40:90] != 128)  # its caption, above the box
    changed = np.any(out != 128, axis=2)
    assert not changed[75:, :30].any()  # far from every drawing


def test_the_image_must_be_rgb_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Canvas(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        Canvas(np.zeros((4, 4, 3), dtype=np.float32))
