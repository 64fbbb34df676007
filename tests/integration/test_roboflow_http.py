"""The Roboflow-compatible routes called with raw HTTP, as Roboflow's docs do (``?api_key=`` in the URL): the
caller-chosen ``image_id``, the logits cache, the unprompted "most prominent mask", and calls that outlive their
wait or find every waiting slot taken."""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from samq.client import Client
from samq.errors import ApiError
from tests.integration.conftest import TENANT_KEYS
from tests.support.images import b64, png_bytes, scene
from tests.support.sam2_reference import reference_predictions
from tests.support.stack import Stack

KEY = TENANT_KEYS["alpha"]


def call(stack: Stack, route: str, body: dict[str, Any], key: str | None = KEY) -> dict[str, Any]:
    """POST like the docs' curl: JSON body, the key in the query string."""
    query = f"?api_key={key}" if key else ""
    data = json.dumps(body).encode()
    client = Client(stack.api_url, timeout=120, max_retries=0)
    return client.request("POST", route + query, content=data, headers={"Content-Type": "application/json"})


def newest_jobs(stack: Stack, count: int) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = stack.client_for(KEY).request("GET", f"/v1/jobs?limit={count}")["data"]
    return jobs


def rle(mask: np.ndarray) -> dict[str, Any]:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


def test_a_chosen_image_id_is_embedded_once_and_segmented_by_name(tenant_stack: Stack) -> None:
    image = {"type": "base64", "value": b64(png_bytes(scene(seed=11)))}
    embedded = call(
        tenant_stack,
        "/sam2/embed_image",
        {"image": image, "image_id": "example_image_id", "sam2_version_id": "hiera_tiny"},
    )
    assert embedded["image_id"] == "example_image_id"

    prompts = {"prompts": [{"points": [{"x": 100, "y": 100, "positive": True}]}]}
    body = {"image_id": "example_image_id", "sam2_version_id": "hiera_tiny", "prompts": prompts, "format": "rle"}
    answer = call(tenant_stack, "/sam2/segment_image", body)
    [segment] = newest_jobs(tenant_stack, 1)
    assert segment["type"] == "segment"
    assert segment["result"]["summary"]["embedding"] in ("memory", "shared")  # the embed call's, not a new encode
    native = tenant_stack.client_for(KEY).result(segment["id"])["instances"]
    assert answer["predictions"][0]["masks"] == native[0]["rle"]

    with pytest.raises(ApiError) as unknown:  # another model never saw the name
        call(tenant_stack, "/sam2/segment_image", body | {"sam2_version_id": "hiera_small"})
    assert unknown.value.status == 422 and "unknown image_id 'example_image_id'" in unknown.value.body["message"]
    with pytest.raises(ApiError) as missing:
        call(tenant_stack, "/sam2/segment_image", {"prompts": prompts})
    assert missing.value.status == 422 and missing.value.body["message"].startswith("send the image")


def test_saved_logits_refine_an_extended_prompt_set(tenant_stack: Stack) -> None:
    image = {"type": "base64", "value": b64(png_bytes(scene(seed=12)))}
    first = [{"points": [{"x": 120, "y": 118, "positive": True}]}]
    common = {"image": image, "image_id": "refine-me", "sam2_version_id": "hiera_tiny", "format": "rle"}
    call(tenant_stack, "/sam2/segment_image", common | {"prompts": first, "save_logits_to_cache": True})
    [saved] = newest_jobs(tenant_stack, 1)

    extended = [{"points": [*first[0]["points"], {"x": 20, "y": 20, "positive": False}]}]
    answer = call(tenant_stack, "/sam2/segment_image", common | {"prompts": extended, "load_logits_from_cache": True})
    [refined] = newest_jobs(tenant_stack, 1)
    client = tenant_stack.client_for(KEY)
    # samq's own mask_input, pointing at the saved job's instance
    native = {
        "type": "segment",
        "model": "sam2.1_hiera_tiny",
        "image": {"base64": image["value"]},
        "prompts": [{"points": extended[0]["points"], "mask_input": {"job": saved["id"], "index": 0}}],
    }
    done = client.submit(native, wait=60)
    assert done["status"] == "succeeded", done["error"]
    assert answer["predictions"][0]["masks"] == client.result(done["id"])["instances"][0]["rle"]
    plain = call(tenant_stack, "/sam2/segment_image", common | {"prompts": extended})
    assert plain["predictions"][0]["confidence"] != answer["predictions"][0]["confidence"]  # the logits mattered
    assert refined["id"] != done["id"]


def test_an_unprompted_segment_is_the_most_prominent_mask(tenant_stack: Stack) -> None:
    pixels = scene(seed=13)
    body = {"image": {"type": "base64", "value": b64(png_bytes(pixels))}, "sam2_version_id": "hiera_tiny"}
    answer = call(tenant_stack, "/sam2/segment_image", body | {"format": "rle"})
    [(mask, score)] = reference_predictions(pixels, [{}])
    assert answer["predictions"] == [{"masks": rle(mask), "confidence": score, "format": "rle"}]


def test_binary_is_roboflows_npz_of_float_logits(tenant_stack: Stack) -> None:
    pixels = scene(seed=14)
    prompts = [
        {"points": [{"x": 120, "y": 118, "positive": True}]},
        {"box": {"x": 263, "y": 58, "width": 56, "height": 46}},
    ]
    body = {"image": {"type": "base64", "value": b64(png_bytes(pixels))}, "sam2_version_id": "hiera_tiny"}
    request = urllib.request.Request(
        f"{tenant_stack.api_url}/sam2/segment_image?api_key={KEY}",
        data=json.dumps(body | {"prompts": prompts, "format": "binary"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["Content-Type"] == "application/octet-stream"
        npz = np.load(io.BytesIO(response.read()))
    masks, low_res = npz["masks"], npz["low_res_masks"]
    assert masks.shape == (2, *pixels.shape[:2]) and masks.dtype == np.float32
    assert low_res.shape[0] == 2 and low_res.dtype == np.float32

    answer = call(tenant_stack, "/sam2/segment_image", body | {"prompts": prompts, "format": "rle"})
    for mask, prediction in zip(masks, answer["predictions"], strict=True):  # thresholded at 0: the same masks
        assert rle(mask > 0) == prediction["masks"]
    [job] = newest_jobs(tenant_stack, 1)
    stored = next(f for f in job["result"]["files"] if f["name"] == "low_res_logits.npy")
    with urllib.request.urlopen(stored["url"], timeout=30) as response:
        assert np.array_equal(np.load(io.BytesIO(response.read())), low_res)


def test_a_call_outliving_its_wait_names_its_job_which_still_completes(waiting_stack: Stack) -> None:
    body: dict[str, Any] = {
        "image": {"type": "base64", "value": b64(png_bytes(scene()))},
        "sam2_version_id": "hiera_tiny",
    }
    bodies = [body, body | {"multimask_output": False}]
    outcomes: dict[int, ApiError | dict[str, Any]] = {}

    def blocked(index: int) -> None:
        try:
            outcomes[index] = call(waiting_stack, "/sam2/segment_image", bodies[index], key=None)
        except ApiError as e:
            outcomes[index] = e

    threads = [threading.Thread(target=blocked, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    with pytest.raises(ApiError) as busy:  # both slots taken
        call(waiting_stack, "/sam2/segment_image", body | {"format": "rle"}, key=None)
    assert busy.value.status == 503 and "SAMQ_API_ROBOFLOW_MAX_WAITING" in busy.value.body["message"]
    for thread in threads:
        thread.join()

    job_ids = []
    for index in range(2):
        outcome = outcomes[index]
        assert isinstance(outcome, ApiError) and outcome.status == 504, outcome
        job_id = outcome.body["error"]["details"][0]["job_id"]
        assert outcome.body["message"].startswith(f"job {job_id} is still queued after 2 s; it goes on")
        job_ids.append(job_id)
    with pytest.raises(ApiError) as again:  # the client retries a 504: the same call joins the same job
        call(waiting_stack, "/sam2/segment_image", body, key=None)
    assert again.value.status == 504 and again.value.body["error"]["details"][0]["job_id"] == job_ids[0]
    assert len(waiting_stack.client.request("GET", "/v1/jobs")["data"]) == 2

    waiting_stack.start_worker()
    done = waiting_stack.client.wait(job_ids[0], timeout=120)
    assert done["status"] == "succeeded", done["error"]
    assert len(waiting_stack.client.result(job_ids[0])["instances"]) == 1
