"""Typed model outputs: structure-of-arrays dataclasses checked once at construction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class InstanceMasks:
    """N instance masks on one image, with what came with each.

    - ``masks``: (N, H, W) bool, at the original image size.
    - ``scores``: (N,) float32, the model's predicted IoU for each mask.
    - ``boxes``: (N, 4) float32 XYXY pixel boxes enclosing each mask (``x1``/``y1`` exclusive, so a one-pixel mask
      at (x, y) has box (x, y, x + 1, y + 1)); an empty mask has an all-zero box. Use :func:`boxes_from_masks`.
    - ``low_res_logits``: (N, r, r) float32 mask logits at the model's low resolution (r = image_size / 4: 256 for
      the stock 1024 models), to feed back as a prompt's ``mask_input``.
    - ``prompt_index``: (N,) int64, the index of the prompt that produced each mask (repeated when a prompt
      returns all of its candidate masks).
    - ``logits``: (N, H, W) float32, the logits ``masks`` are ``> 0`` of, when they were asked for (else None).
    """

    masks: npt.NDArray[np.bool_]
    scores: npt.NDArray[np.float32]
    boxes: npt.NDArray[np.float32]
    low_res_logits: npt.NDArray[np.float32]
    prompt_index: npt.NDArray[np.int64]
    logits: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        expect_shape(self.masks, "masks", np.bool_, 3)
        count = self.masks.shape[0]
        expect_shape(self.scores, "scores", np.float32, 1, (count,))
        expect_shape(self.boxes, "boxes", np.float32, 2, (count, 4))
        expect_shape(self.low_res_logits, "low_res_logits", np.float32, 3)
        if self.low_res_logits.shape[0] != count or self.low_res_logits.shape[1] != self.low_res_logits.shape[2]:
            raise ValueError(f"low_res_logits must be ({count}, r, r), got {self.low_res_logits.shape}")
        expect_shape(self.prompt_index, "prompt_index", np.int64, 1, (count,))
        if self.logits is not None:
            expect_shape(self.logits, "logits", np.float32, 3, self.masks.shape)

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def image_hw(self) -> tuple[int, int]:
        """(height, width) of the image the masks cover."""
        return int(self.masks.shape[1]), int(self.masks.shape[2])

    @classmethod
    def from_masks(
        cls,
        masks: npt.NDArray[np.bool_],
        scores: npt.NDArray[np.float32],
        low_res_logits: npt.NDArray[np.float32],
        prompt_index: npt.NDArray[np.int64],
    ) -> InstanceMasks:
        """Build with ``boxes`` computed from ``masks``."""
        return cls(
            masks=masks,
            scores=scores,
            boxes=boxes_from_masks(masks),
            low_res_logits=low_res_logits,
            prompt_index=prompt_index,
        )


def boxes_from_masks(masks: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """(N, H, W) bool masks → (N, 4) float32 XYXY boxes; ``x2``/``y2`` one past the last set pixel; empty → zeros."""
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    boxes = np.zeros((masks.shape[0], 4), dtype=np.float32)
    rows_any = np.asarray(masks.any(axis=2))  # (N, H)
    cols_any = np.asarray(masks.any(axis=1))  # (N, W)
    for i in range(masks.shape[0]):
        ys = np.flatnonzero(rows_any[i])
        if ys.size == 0:
            continue
        xs = np.flatnonzero(cols_any[i])
        boxes[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return boxes


def expect_shape(
    array: object, name: str, dtype: type[np.generic], ndim: int, shape: tuple[int, ...] | None = None
) -> None:
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(array).__name__}")
    if array.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype)}, got {array.dtype}")
    if array.ndim != ndim or (shape is not None and array.shape != shape):
        expected = shape if shape is not None else f"{ndim} dimensions"
        raise ValueError(f"{name} must have shape {expected}, got {array.shape}")
