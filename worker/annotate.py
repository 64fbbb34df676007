"""annotated.png: a job's instances drawn on its image with supervision's annotators.

Masks are tinted one at a time as the result is written (so a job's full-size masks never exist at once), then the
prompts (segment jobs: points green or red, boxes white), then each instance's box and caption. Colours come from
supervision's default palette by a colour index the caller picks (the instance's category, or its index).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt
import supervision as sv
from PIL import Image

from worker.results import boxes_from_masks

MASK_OPACITY = 0.5
POSITIVE = (0, 200, 0)
NEGATIVE = (230, 0, 0)
PROMPT_BOX = (255, 255, 255)
"""RGB colours of prompt points and boxes."""


class Canvas:
    """A copy of an (H, W, 3) uint8 RGB image that a job's instances are drawn on; :meth:`png` encodes it."""

    def __init__(self, image: npt.NDArray[np.uint8]) -> None:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"the image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        self._scene = np.ascontiguousarray(image[:, :, ::-1])  # supervision and OpenCV draw on BGR
        height, width = image.shape[:2]
        self._thickness = sv.calculate_optimal_line_thickness((width, height))
        self._text_scale = max(0.4, sv.calculate_optimal_text_scale((width, height)))
        self._masks = sv.MaskAnnotator(opacity=MASK_OPACITY)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self._scene.shape[0]), int(self._scene.shape[1])

    def mask(self, mask: npt.NDArray[np.bool_], colour: int) -> None:
        """Tint one (H, W) bool mask in palette colour ``colour``."""
        if mask.shape != self.shape:
            raise ValueError(f"the mask is {mask.shape}, the image {self.shape}")
        masks = mask[np.newaxis]
        one = sv.Detections(xyxy=boxes_from_masks(masks), mask=masks)
        self._masks.annotate(self._scene, one, custom_color_lookup=np.array([colour]))

    def prompts(
        self, points: Sequence[tuple[float, float, bool]], boxes: Sequence[tuple[float, float, float, float]]
    ) -> None:
        """Visual prompts: points ``(x, y, positive)`` as dots (green positive, red negative), boxes outlined."""
        radius = 2 * self._thickness + 2
        for x0, y0, x1, y1 in boxes:
            corners = (round(x0), round(y0)), (round(x1), round(y1))
            cv2.rectangle(self._scene, *corners, _bgr(PROMPT_BOX), self._thickness, cv2.LINE_AA)
        for x, y, positive in points:
            centre = (round(x), round(y))
            cv2.circle(self._scene, centre, radius, _bgr(POSITIVE if positive else NEGATIVE), -1, cv2.LINE_AA)
            cv2.circle(self._scene, centre, radius, (255, 255, 255), max(1, self._thickness // 2), cv2.LINE_AA)

    def boxes(self, boxes: npt.NDArray[np.float32], colours: Sequence[int], captions: Sequence[str]) -> None:
        """Each instance's (N, 4) XYXY box outlined and captioned, in its palette colour; empty boxes are skipped."""
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]) if len(boxes) else np.zeros(0, dtype=bool)
        if not keep.any():
            return
        detections = sv.Detections(xyxy=boxes[keep].astype(np.float32))
        lookup = np.asarray(colours)[keep]
        sv.BoxAnnotator(thickness=self._thickness).annotate(self._scene, detections, custom_color_lookup=lookup)
        labels = sv.LabelAnnotator(text_scale=self._text_scale, text_padding=4, smart_position=True)
        kept = [caption for caption, k in zip(captions, keep.tolist(), strict=True) if k]
        labels.annotate(self._scene, detections, labels=kept, custom_color_lookup=lookup)

    def png(self) -> bytes:
        out = io.BytesIO()
        Image.fromarray(self._scene[:, :, ::-1]).save(out, format="PNG")
        return out.getvalue()


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return rgb[2], rgb[1], rgb[0]
