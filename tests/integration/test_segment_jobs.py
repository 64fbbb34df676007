"""Segment and embed jobs through the whole system: HTTP → Redis → a Celery worker process → SAM2 → storage."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from tests.support.images import b64, png_bytes, scene
from tests.support.stack import Stack

HEIGHT, WIDTH = 240, 320
PROMPTS = [
    {"points": [{"x": 120, "y": 118}]},
    {"box": {"x0": 235, "y0": 35, "x1": 292, "y1": 82}},
    {
        "points": [{"x": 128, "y": 120}, {"x": 20, "y": 20, "positive": False}],
        "box": {"x0": 60, "y0": 60, "x1": 200, "y1": 180},
    },
]


def segment_job(image: dict[str, str], **extra: object) -> dict[str, object]:
    return {"type": "segment", "model": "sam2.1_hiera_tiny", "image": image, "prompts": PROMPTS, **extra}


def fetch_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return, unused-ignore]


@pytest.mark.parametrize("stack_name", ["local_stack", "s3_stack"])
def test_segment_job_succeeds_and_rle_decodes_to_image_size(stack_name: str, request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue(stack_name)
    client = stack.client
    job = client.submit(segment_job({"base64": b64(png_bytes(scene()))}, metadata={"run": stack_name}))
    assert job["status"] == "queued"
    assert job["id"].startswith("job_")

    done = client.wait(job["id"], timeout=120)

    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1
    assert done["metadata"] == {"run": stack_name}
    assert done["progress"] == {"done": 1, "total": 1, "unit": "images"}
    document = fetch_json(done["result"]["url"])  # the presigned URL (the API's /v1/files or S3 itself)
    assert document == client.result(job["id"])
    assert document["image"]["width"] == WIDTH and document["image"]["height"] == HEIGHT
    instances = document["instances"]
    assert [i["prompt_index"] for i in instances] == [0, 1, 2]
    for instance in instances:
        mask = coco_mask.decode(instance["rle"])
        assert mask.shape == (HEIGHT, WIDTH)
        assert int(mask.sum()) == instance["area"]
    names = {f["name"] for f in done["result"]["files"]}
    assert names == {"result.json", "low_res_logits.npy"}


def test_all_output_formats_and_all_masks(local_stack: Stack) -> None:
    client = local_stack.client
    job = client.submit(
        segment_job(
            {"base64": b64(png_bytes(scene()))}, return_all_masks=True, output={"formats": ["rle", "polygon", "png"]}
        ),
        wait=60,
    )
    assert job["status"] == "succeeded", job["error"]
    document = client.result(job["id"])
    assert len(document["instances"]) == 3 * len(PROMPTS)  # three multimask proposals per prompt
    files = {f["name"]: f["url"] for f in job["result"]["files"]}
    for instance in document["instances"]:
        assert "polygon" in instance
        with urllib.request.urlopen(files[instance["png"]], timeout=10) as response:
            assert response.read()[:8] == b"\x89PNG\r\n\x1a\n"


def test_upload_then_embed_then_segment_by_image_id(local_stack: Stack) -> None:
    client = local_stack.client
    data = png_bytes(scene(seed=7))
    upload = client.upload(data, "image/png")
    assert upload["bytes"] == len(data) and upload["id"].startswith("upl_")

    embedded = client.submit({"type": "embed", "image": {"upload": upload["id"]}}, wait=60)
    assert embedded["status"] == "succeeded", embedded["error"]
    image_id = embedded["result"]["summary"]["image_id"]
    assert image_id == upload["sha256"]

    by_id = client.submit(segment_job({"image_id": image_id}), wait=60)
    assert by_id["status"] == "succeeded", by_id["error"]
    assert by_id["result"]["summary"]["embedding"] in ("memory", "shared")
    by_bytes = client.submit(segment_job({"upload": upload["id"]}), wait=60)
    assert client.result(by_id["id"])["instances"] == client.result(by_bytes["id"])["instances"]


def test_mask_input_refines_an_earlier_instance(local_stack: Stack) -> None:
    client = local_stack.client
    image = {"base64": b64(png_bytes(scene()))}
    first = client.submit(segment_job(image), wait=60)
    assert first["status"] == "succeeded"
    refine: dict[str, Any] = {"type": "segment", "image": image, "prompts": [
        {"points": [{"x": 120, "y": 118}], "mask_input": {"job": first["id"], "index": 0}}
    ], "multimask_output": False}  # fmt: skip
    second = client.submit(refine, wait=60)
    assert second["status"] == "succeeded", second["error"]
    refined = client.result(second["id"])["instances"][0]
    assert coco_mask.decode(refined["rle"]).shape == (HEIGHT, WIDTH)

    missing = client.submit(
        {**refine, "prompts": [{**refine["prompts"][0], "mask_input": {"job": first["id"], "index": 99}}]}, wait=60
    )
    assert missing["status"] == "failed"
    assert missing["error"]["code"] == "mask_input_not_found"


def test_second_job_on_same_image_hits_the_embedding_cache(local_stack: Stack) -> None:
    client = local_stack.client
    image = {"base64": b64(png_bytes(scene(seed=3)))}
    first = client.submit(segment_job(image), wait=60)
    second = client.submit(segment_job(image), wait=60)
    assert first["result"]["summary"]["embedding"] == "miss"
    assert second["result"]["summary"]["embedding"] == "memory"
    first_masks = [np.asarray(coco_mask.decode(i["rle"])) for i in client.result(first["id"])["instances"]]
    second_masks = [np.asarray(coco_mask.decode(i["rle"])) for i in client.result(second["id"])["instances"]]
    assert all(np.array_equal(a, b) for a, b in zip(first_masks, second_masks, strict=True))


def test_labelled_prompts_carry_a_detectors_labels_to_the_result_and_the_coco_export(local_stack: Stack) -> None:
    """Boxes from another model (the SAM2 workflow block's case): label, class id and confidence reach each mask."""
    client = local_stack.client
    detections = [
        {
            "box": {"x0": 60, "y0": 60, "x1": 200, "y1": 180},
            "label": "ellipse",
            "class_id": 3,
            "detection_confidence": 0.9,
        },
        {"box": {"x0": 235, "y0": 35, "x1": 292, "y1": 82}, "label": "block", "class_id": 7},
        {"points": [{"x": 10, "y": 10}]},
    ]
    image = {"base64": b64(png_bytes(scene()))}
    done = client.submit(segment_job(image, prompts=detections), wait=60)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["summary"]["instances_per_label"] == {"ellipse": 1, "block": 1}
    instances = client.result(done["id"])["instances"]
    carried = [{k: i[k] for k in ("label", "class_id", "detection_confidence") if k in i} for i in instances]
    assert carried == [
        {"label": "ellipse", "class_id": 3, "detection_confidence": 0.9},
        {"label": "block", "class_id": 7},
        {},
    ]

    upload = client.upload(png_bytes(scene(seed=1)), "image/png")["id"]
    batch = {
        "type": "batch",
        "template": {"type": "segment", "model": "sam2.1_hiera_tiny"},
        "inputs": {"items": [{"upload": upload, "name": "a.png", "prompts": detections[:2]}]},
        "export": ["coco"],
    }
    finished = client.wait(client.submit(batch)["id"], timeout=120)
    assert finished["status"] == "succeeded", finished["error"]
    url = next(f["url"] for f in finished["result"]["files"] if f["name"] == "coco.json")
    coco = fetch_json(url)
    categories = {c["id"]: c for c in coco["categories"]}
    assert [
        (categories[a["category_id"]]["name"], categories[a["category_id"]]["class_id"]) for a in coco["annotations"]
    ] == [
        ("ellipse", 3),
        ("block", 7),
    ]
    assert [a.get("detection_confidence") for a in coco["annotations"]] == [0.9, None]
