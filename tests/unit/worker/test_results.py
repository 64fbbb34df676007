from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from worker.results import InstanceMasks, boxes_from_masks


def _fields(count: int = 2, height: int = 6, width: int = 8) -> dict[str, Any]:
    masks = np.zeros((count, height, width), dtype=bool)
    return {
        "masks": masks,
        "scores": np.zeros(count, dtype=np.float32),
        "low_res_logits": np.zeros((count, 4, 4), dtype=np.float32),
        "prompt_index": np.arange(count, dtype=np.int64),
    }


def test_boxes_from_masks_are_exclusive_xyxy_and_zero_when_empty() -> None:
    masks = np.zeros((3, 6, 8), dtype=bool)
    masks[0, 1:4, 2:5] = True
    masks[2, 5, 7] = True
    boxes = boxes_from_masks(masks)
    assert boxes.dtype == np.float32
    assert boxes.tolist() == [[2, 1, 5, 4], [0, 0, 0, 0], [7, 5, 8, 6]]


def test_from_masks_computes_boxes() -> None:
    fields = _fields()
    fields["masks"][1, 2, 3] = True
    result = InstanceMasks.from_masks(**fields)
    assert result.boxes.tolist() == [[0, 0, 0, 0], [3, 2, 4, 3]]
    assert len(result) == 2
    assert result.image_hw == (6, 8)


def test_empty_result_is_valid() -> None:
    assert len(InstanceMasks.from_masks(**_fields(count=0))) == 0


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("masks", np.zeros((2, 6, 8), dtype=np.uint8), "masks must have dtype bool"),
        ("scores", np.zeros(3, dtype=np.float32), "scores must have shape"),
        ("scores", np.zeros(2, dtype=np.float64), "scores must have dtype float32"),
        ("boxes", np.zeros((2, 5), dtype=np.float32), "boxes must have shape"),
        ("low_res_logits", np.zeros((2, 4, 5), dtype=np.float32), "low_res_logits must be"),
        ("low_res_logits", np.zeros((3, 4, 4), dtype=np.float32), "low_res_logits must be"),
        ("prompt_index", np.zeros(2, dtype=np.int32), "prompt_index must have dtype int64"),
        ("prompt_index", [0, 1], "prompt_index must be a numpy array"),
    ],
)
def test_inconsistent_fields_are_refused(field: str, value: Any, fragment: str) -> None:
    fields = _fields()
    fields["boxes"] = np.zeros((2, 4), dtype=np.float32)
    fields[field] = value
    with pytest.raises(ValueError, match=fragment):
        InstanceMasks(**fields)
