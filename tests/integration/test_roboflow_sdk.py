"""Roboflow's own client (``inference-sdk`` from PyPI, in its own environment and process) pointed at a samq
stack with API keys: every SAM2/SAM3 method answers what the equivalent native job computed, mask for mask."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from api.roboflow.responses import roboflow_polygons
from samq.client import Client
from tests.integration.conftest import TENANT_KEYS
from tests.support.images import b64, png_bytes, scene
from tests.support.roboflow_sdk import run_sdk
from tests.support.stack import Stack

KEY = TENANT_KEYS["alpha"]
HEIGHT, WIDTH = 240, 320
SAM2_PROMPTS: list[dict[str, Any]] = [
    {"points": [{"x": 120, "y": 118, "positive": True}]},
    {"points": [{"x": 128, "y": 120, "positive": True}, {"x": 20, "y": 20, "positive": False}]},
    {"box": {"x": 263.5, "y": 58.5, "width": 57, "height": 47}},  # centre-anchored, Roboflow's convention
    {"box": {"x": 130, "y": 120, "width": 140, "height": 120}, "points": [{"x": 128, "y": 120, "positive": True}]},
]


def native_prompt(prompt: dict[str, Any]) -> dict[str, Any]:
    """The same prompt in samq's convention: corner boxes."""
    native: dict[str, Any] = {"points": prompt.get("points", [])}
    if "box" in prompt:
        b = prompt["box"]
        native["box"] = {
            "x0": b["x"] - b["width"] / 2,
            "y0": b["y"] - b["height"] / 2,
            "x1": b["x"] + b["width"] / 2,
            "y1": b["y"] + b["height"] / 2,
        }
    return native


def native_instances(client: Client, job: dict[str, Any]) -> list[dict[str, Any]]:
    done = client.submit(job, wait=120)
    assert done["status"] == "succeeded", done["error"]
    instances: list[dict[str, Any]] = client.result(done["id"])["instances"]
    return instances


def filled(polygons: list[list[list[int]]]) -> np.ndarray:
    """What a Roboflow user's code draws: every polygon filled at once (OpenCV fills by parity: holes stay empty)."""
    canvas = np.zeros((HEIGHT, WIDTH), np.uint8)
    rings = [np.array(p, np.int32).reshape(-1, 1, 2) for p in polygons if p]
    if rings:
        cv2.fillPoly(canvas, rings, 1)
    return canvas.astype(bool)


def assert_same_masks(predictions: list[dict[str, Any]], instances: list[dict[str, Any]], fmt: str) -> None:
    assert len(predictions) == len(instances)
    for prediction, instance in zip(predictions, instances, strict=True):
        assert prediction["confidence"] == instance["score"]
        if fmt == "rle":
            assert prediction["format"] == "rle" and prediction["masks"] == instance["rle"]
        else:
            assert prediction["format"] == "polygon"
            assert prediction["masks"] == roboflow_polygons(instance["polygon"])
            assert np.array_equal(filled(prediction["masks"]), filled(roboflow_polygons(instance["polygon"])))


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client reads a file's bytes as they are (numpy arrays it would re-encode as JPEG)."""
    path = tmp_path_factory.mktemp("roboflow") / "scene.png"
    path.write_bytes(png_bytes(scene()))
    return path


def test_sam2_segment_image_equals_the_native_job(tenant_stack: Stack, image_file: Path) -> None:
    calls: list[dict[str, Any]] = [
        {"method": "sam2_segment_image", "kwargs": {"prompts": SAM2_PROMPTS, **options}}
        for options in (
            {"multimask_output": True, "mask_input_format": "json"},
            {"multimask_output": False, "mask_input_format": "rle"},
            {"multimask_output": True, "mask_input_format": "rle"},
        )
    ]
    calls.append({"method": "sam2_segment_image", "kwargs": {"prompts": SAM2_PROMPTS[1:2]}})  # one prompt
    for call in calls:
        call["kwargs"] |= {"inference_input": str(image_file), "sam2_version_id": "hiera_tiny"}
    outcomes = run_sdk(tenant_stack.api_url, calls, api_key=KEY)  # the key in the JSON body (the SDK's default)

    client = tenant_stack.client_for(KEY)
    image = {"base64": b64(image_file.read_bytes())}
    for call, outcome in zip(calls, outcomes, strict=True):
        assert "result" in outcome, outcome
        kwargs = call["kwargs"]
        fmt = kwargs.get("mask_input_format", "json")
        job = {
            "type": "segment",
            "model": "sam2.1_hiera_tiny",
            "image": image,
            "prompts": [native_prompt(p) for p in kwargs["prompts"]],
            "multimask_output": kwargs.get("multimask_output", True),
            "output": {"formats": ["rle" if fmt == "rle" else "polygon"]},
        }
        assert set(outcome["result"]) == {"predictions", "time"}
        assert_same_masks(outcome["result"]["predictions"], native_instances(client, job), fmt)
    # multimask_output chose differently somewhere: the flag reached the model
    assert outcomes[1]["result"]["predictions"] != outcomes[2]["result"]["predictions"]


def test_sam3_methods_equal_the_native_jobs(tenant_stack: Stack, image_file: Path) -> None:
    concept_prompts: list[dict[str, Any]] = [
        {"type": "text", "text": "yellow ellipse"},
        {"type": "text", "text": "green block", "output_prob_thresh": 0.2},
        {"type": "visual", "boxes": [{"x": 240, "y": 40, "width": 48, "height": 40}], "box_labels": [1]},
    ]
    path = str(image_file)
    calls: list[dict[str, Any]] = [
        {"method": "sam3_embed_image", "kwargs": {"inference_input": path, "image_id": "my-scene"}},
        {
            "method": "sam3_visual_segment",
            "kwargs": {"inference_input": path, "prompts": SAM2_PROMPTS[:3], "multimask_output": False},
        },
        {
            "method": "sam3_concept_segment",
            "kwargs": {"inference_input": path, "prompts": concept_prompts, "output_prob_thresh": 0.1},
        },
        {
            "method": "sam3_concept_segment",
            "kwargs": {
                "inference_input": path,
                "prompts": concept_prompts[:2],
                "output_prob_thresh": 0.0,
                "nms_iou_threshold": 0.3,
                "format": "rle",
            },
        },
    ]
    outcomes = run_sdk(tenant_stack.api_url, calls, api_key=KEY, transport="header")  # Authorization: Bearer
    assert all("result" in outcome for outcome in outcomes), outcomes
    embedded, visual, concept, concept_nms = (o["result"] for o in outcomes)
    assert embedded["image_id"] == "my-scene" and embedded["time"] > 0

    client = tenant_stack.client_for(KEY)
    image = {"base64": b64(image_file.read_bytes())}
    segment = {
        "type": "segment",
        "model": "sam3",
        "image": image,
        "prompts": [native_prompt(p) for p in SAM2_PROMPTS[:3]],
        "multimask_output": False,
        "output": {"formats": ["polygon"]},
    }
    assert_same_masks(visual["predictions"], native_instances(client, segment), "json")

    exemplar = {"x0": 240, "y0": 40, "x1": 288, "y1": 80, "positive": True}
    native_prompts: list[dict[str, Any]] = [
        {"text": "yellow ellipse"},
        {"text": "green block", "threshold": 0.2},
        {"boxes": [exemplar]},
    ]
    jobs: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (concept, {"prompts": native_prompts, "threshold": 0.1, "output": {"formats": ["polygon"]}}),
        (concept_nms, {"prompts": native_prompts[:2], "threshold": 0.0, "nms_iou": 0.3}),
    ]
    for result, job in jobs:
        instances = native_instances(client, {"type": "concept", "image": image, "max_detections": 1000, **job})
        prompts = job["prompts"]
        assert [r["prompt_index"] for r in result["prompt_results"]] == list(range(len(prompts)))
        for index, entry in enumerate(result["prompt_results"]):
            expected = concept_prompts[index]
            echo = {"prompt_index": index, "text": expected.get("text"), "num_boxes": len(expected.get("boxes", []))}
            assert entry["echo"] == echo | {"type": "visual" if expected.get("boxes") else "text"}
            mine = [i for i in instances if i["prompt_index"] == index]
            assert_same_masks(entry["predictions"], mine, "rle" if "nms_iou" in job else "json")
    assert sum(len(r["predictions"]) for r in concept["prompt_results"]) > 0


def test_client_errors_show_the_servers_message(tenant_stack: Stack, image_file: Path) -> None:
    path = str(image_file)
    calls = [
        {"method": "sam2_segment_image", "kwargs": {"inference_input": path, "sam2_version_id": "hiera_huge"}},
        {
            "method": "sam2_segment_image",
            "kwargs": {"inference_input": path, "prompts": [{"box": {"x": 50, "y": 50, "width": 0, "height": 10}}]},
        },
        {"method": "sam3_concept_segment", "kwargs": {"inference_input": path, "prompts": [{"type": "visual"}]}},
        {"method": "sam3_concept_segment", "kwargs": {"inference_input": path, "prompts": [], "model_id": "x/y"}},
    ]
    outcomes = run_sdk(tenant_stack.api_url, calls, api_key=KEY)
    errors = [outcome.get("error") for outcome in outcomes]
    assert all(error is not None and error["status_code"] == 422 for error in errors), outcomes
    messages = [error["api_message"] for error in errors if error is not None]
    assert messages[0].startswith("unknown sam2_version_id 'hiera_huge': this server runs hiera_tiny")
    assert "prompts.0.box.width" in messages[1] and "greater than 0" in messages[1]
    assert "a visual prompt needs at least one box" in messages[2]
    assert "prompts" in messages[3]

    [unauthorized] = run_sdk(tenant_stack.api_url, calls[:1], api_key="not-a-key")
    assert unauthorized["error"]["status_code"] == 401
    assert unauthorized["error"]["api_message"].startswith("a valid API key is required")
