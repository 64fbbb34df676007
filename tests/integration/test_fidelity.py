"""A segment job's masks and scores are bit-identical to calling Meta's SAM2ImagePredictor directly."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from tests.support.images import b64, png_bytes, scene
from tests.support.sam2_reference import reference_predictions
from tests.support.stack import Stack

PROMPTS: list[dict[str, Any]] = [
    {"points": [{"x": 120, "y": 118}]},
    {"points": [{"x": 250, "y": 60}, {"x": 20, "y": 200, "positive": False}]},
    {"box": {"x0": 60.5, "y0": 60, "x1": 200, "y1": 180.25}},
    {"points": [{"x": 128, "y": 120}], "box": {"x0": 60, "y0": 60, "x1": 200, "y1": 180}},
]


def test_segment_job_is_bit_identical_to_the_reference_predictor(local_stack: Stack) -> None:
    image = scene()
    job = local_stack.client.submit(
        {"type": "segment", "image": {"base64": b64(png_bytes(image))}, "prompts": PROMPTS}, wait=60
    )
    assert job["status"] == "succeeded", job["error"]
    instances = local_stack.client.result(job["id"])["instances"]

    expected = reference_predictions(image, PROMPTS)
    assert len(instances) == len(expected)
    for instance, (mask, score) in zip(instances, expected, strict=True):
        reference_rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert instance["rle"] == {"size": reference_rle["size"], "counts": reference_rle["counts"].decode()}
        assert instance["score"] == score
        assert mask.any() or instance["area"] == 0


def test_a_segment_job_without_prompts_is_the_predictor_called_with_no_prompt(local_stack: Stack) -> None:
    """The most prominent mask (Roboflow's unprompted SAM2 call): one instance, Meta's predictor with no prompt."""
    image = scene(seed=21)  # an image no other test encodes
    job = local_stack.client.submit({"type": "segment", "image": {"base64": b64(png_bytes(image))}}, wait=60)
    assert job["status"] == "succeeded", job["error"]
    instances = local_stack.client.result(job["id"])["instances"]

    [(mask, score)] = reference_predictions(image, [{}])
    reference_rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert [i["rle"] for i in instances] == [
        {"size": reference_rle["size"], "counts": reference_rle["counts"].decode()}
    ]
    assert instances[0]["score"] == score and instances[0]["prompt_index"] == 0
