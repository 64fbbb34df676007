"""SAM3 jobs through the real stack: concept jobs equal a direct transformers call; phrases, labels, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from samq.errors import ApiError
from tests.support.images import b64, png_bytes, scene
from tests.support.sam3_reference import reference_concept, reference_detect, reference_track
from tests.support.stack import TEST_IMAGE_SIZE, Stack
from worker.runners.sam3 import PATCH_SIZE

SAM3_SIZE = TEST_IMAGE_SIZE - TEST_IMAGE_SIZE % PATCH_SIZE  # the worker rounds SAMQ_IMAGE_SIZE down to 14s
PHRASES = ["red car", "dog", "a person on a bike"]


def concept(image: dict[str, Any], prompts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"type": "concept", "model": "sam3", "image": image, "prompts": prompts, **extra}


def decode(rle: dict[str, Any]) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def test_a_concept_job_equals_the_direct_transformers_call(local_stack: Stack) -> None:
    image = scene()
    job = concept({"base64": b64(png_bytes(image))}, [{"text": t} for t in PHRASES], threshold=0.0)
    done = local_stack.client.submit(job, wait=120)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["summary"]["instances_per_prompt"] == [32, 32, 32]  # every query of the shrunk decoder
    instances = local_stack.client.result(done["id"])["instances"]

    expected = reference_detect(*reference_concept(0, SAM3_SIZE), image, [{"text": t} for t in PHRASES])
    assert len(instances) == len(expected["scores"])
    for i, instance in enumerate(instances):
        assert instance["score"] == float(expected["scores"][i])
        assert [instance["bbox"][k] for k in ("x0", "y0", "x1", "y1")] == expected["boxes"][i].tolist()
        assert np.array_equal(decode(instance["rle"]), expected["masks"][i])
        assert instance["prompt_index"] == int(expected["prompt_index"][i])
        assert instance["label"] == PHRASES[instance["prompt_index"]]


def test_phrases_are_labelled_and_a_phrase_without_match_gives_nothing(local_stack: Stack) -> None:
    image = {"base64": b64(png_bytes(scene()))}
    prompts: list[dict[str, Any]] = [
        {"text": "red car", "threshold": 0.0},
        {"text": "dog", "threshold": 1.0},
        {"text": "a bike"},
    ]
    done = local_stack.client.submit(concept(image, prompts, threshold=0.0, max_detections=10), wait=120)
    assert done["status"] == "succeeded", done["error"]
    per_prompt = done["result"]["summary"]["instances_per_prompt"]
    assert per_prompt[1] == 0 and sum(per_prompt) == 10
    instances = local_stack.client.result(done["id"])["instances"]
    assert {(i["label"], i["prompt_index"]) for i in instances} <= {("red car", 0), ("a bike", 2)}
    assert [i["score"] for i in instances] == sorted((i["score"] for i in instances), reverse=True)

    again = local_stack.client.submit(concept(image, prompts, threshold=0.0, max_detections=10), wait=120)
    assert again["result"]["summary"]["embedding"] == "memory", "the second job on the image skips the encoder"
    assert local_stack.client.result(again["id"])["instances"] == instances


def test_a_sam3_segment_job_equals_the_direct_tracker_call(local_stack: Stack) -> None:
    image = scene()
    prompts: list[dict[str, Any]] = [
        {"points": [{"x": 120, "y": 118}]},
        {"points": [{"x": 250, "y": 60}, {"x": 20, "y": 200, "positive": False}]},
        {"box": {"x0": 60, "y0": 60, "x1": 200, "y1": 180}},
    ]
    job = {"type": "segment", "model": "sam3", "image": {"base64": b64(png_bytes(image))}, "prompts": prompts}
    done = local_stack.client.submit(job, wait=120)
    assert done["status"] == "succeeded", done["error"]
    instances = local_stack.client.result(done["id"])["instances"]
    expected = reference_track(0, SAM3_SIZE, image, prompts)
    assert [i["prompt_index"] for i in instances] == [0, 1, 2]
    for instance, (mask, score) in zip(instances, expected, strict=True):
        assert np.array_equal(decode(instance["rle"]), mask)
        assert instance["score"] == score


@pytest.mark.parametrize(
    ("prompts", "field"),
    [
        ([{"text": ""}], "prompts.0.text"),
        ([{"text": "   "}], "prompts.0.text"),
        ([{"text": "x" * 300}], "prompts.0.text"),
        ([{"text": f"thing {i}"} for i in range(17)], "prompts"),
        ([{"text": "car", "boxes": [{"x0": 10, "y0": 10, "x1": 400, "y1": 50}]}], "prompts.0.boxes.0"),
        ([{}], "prompts.0"),
    ],
    ids=["empty", "blank", "300-chars", "17-prompts", "exemplar-outside", "nothing"],
)
def test_bad_concept_prompts_are_422_with_the_field_path(local_stack: Stack, prompts: list, field: str) -> None:
    upload = local_stack.client.upload(png_bytes(scene()), "image/png")
    with pytest.raises(ApiError) as caught:
        local_stack.client.submit(concept({"upload": upload["id"]}, prompts))
    assert caught.value.status == 422
    assert field in [d["field"] for d in caught.value.body["error"]["details"]]
