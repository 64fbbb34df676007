"""Bad input gets a documented 4xx, or a job that fails with a precise error.code; the worker survives it."""

from __future__ import annotations

import json
import urllib.request

import pytest

from samq.client import Client
from samq.errors import ApiError
from tests.support.images import b64, bomb_png, png_bytes, scene
from tests.support.stack import Stack

GOOD_PROMPTS = [{"points": [{"x": 100, "y": 100}]}]


def raw_post(stack: Stack, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(
        stack.api_url + path, data=body, method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def assert_error(client_call: object, status: int, code: str, field: str | None = None) -> dict:
    with pytest.raises(ApiError) as caught:
        client_call()  # type: ignore[operator]
    assert caught.value.status == status, caught.value.body
    error = caught.value.body["error"]
    assert error["code"] == code
    assert error["message"]
    if field is not None:
        assert field in [d["field"] for d in error["details"]], error["details"]
    return error


def segment(image: dict[str, str], prompts: list[dict] | None = None, **extra: object) -> dict:
    return {"type": "segment", "image": image, "prompts": GOOD_PROMPTS if prompts is None else prompts, **extra}


def good_image() -> dict[str, str]:
    return {"base64": b64(png_bytes(scene()))}


def test_malformed_json_is_400(local_stack: Stack) -> None:
    status, body = raw_post(local_stack, "/v1/jobs", b'{"type": "segment",')
    assert status == 400
    assert body["error"]["code"] == "malformed_json"


def test_non_json_body_is_415(local_stack: Stack) -> None:
    status, body = raw_post(local_stack, "/v1/jobs", b"type=segment", "application/x-www-form-urlencoded")
    assert status == 415
    assert body["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("job", "field", "code"),
    [
        (segment(good_image(), colour="red"), "colour", "validation_error"),
        (segment(good_image(), model="sam9_giant"), "model", "validation_error"),
        (segment(good_image(), prompts=[{"points": [{"x": 1, "y": 1}]}] * 65), "prompts", "validation_error"),
        (segment(good_image(), prompts=[{"points": [{"x": -1, "y": 5}]}]), "prompts.0.points.0.x", "validation_error"),
        ({"type": "paint", "image": good_image()}, "type", "validation_error"),
        # what the schema cannot say has codes of its own: a schema-valid body never gets validation_error
        (segment(good_image(), prompts=[{"box": {"x0": 50, "y0": 5, "x1": 10, "y1": 9}}]), "prompts.0.box",
         "invalid_value"),
        (segment(good_image(), prompts=[{}]), "prompts.0", "invalid_value"),
        (segment({"upload": "upl_doesnotexist"}), "image.upload", "unknown_upload"),
        (segment(good_image(), prompts=[{"points": [{"x": 1, "y": 1}], "mask_input": {"job": "job_nope", "index": 0}}]),
         "prompts.0.mask_input.job", "unknown_job"),
        (segment({"base64": "not base64 at all!"}), "image.base64", "invalid_base64"),
    ],
)  # fmt: skip
def test_invalid_jobs_are_422_with_the_field_path(local_stack: Stack, job: dict, field: str, code: str) -> None:
    assert_error(lambda: local_stack.client.submit(job), 422, code, field)


def test_base64_over_the_cap_is_413(local_stack: Stack) -> None:
    too_big = b64(b"\x00" * (2 * 1024 * 1024 + 1))
    error = assert_error(lambda: local_stack.client.submit(segment({"base64": too_big})), 413, "payload_too_large")
    assert str(2 * 1024 * 1024) in error["message"]


def test_unknown_job_is_404_and_cancel_of_finished_job_is_409(local_stack: Stack) -> None:
    client = local_stack.client
    assert_error(lambda: client.get("job_0123456789abcdef01234567"), 404, "job_not_found")
    assert_error(lambda: client.request("POST", "/v1/jobs/job_nope/cancel"), 404, "job_not_found")
    assert_error(lambda: client.result("job_nope"), 404, "job_not_found")
    done = client.submit(segment(good_image()), wait=60)
    assert done["status"] == "succeeded"
    assert_error(lambda: client.request("POST", f"/v1/jobs/{done['id']}/cancel"), 409, "job_not_cancelable")


@pytest.mark.parametrize(
    ("image_bytes", "prompts", "code"),
    [
        (png_bytes(scene())[:300], GOOD_PROMPTS, "invalid_image"),
        (b"just some text, not an image\n" * 20, GOOD_PROMPTS, "unsupported_media_type"),
    ],
    ids=["corrupt", "text-file"],
)
def test_bad_media_fails_the_job_with_a_precise_code_and_the_worker_survives(
    local_stack: Stack, image_bytes: bytes, prompts: list[dict], code: str
) -> None:
    client = local_stack.client
    worker = local_stack.workers[0]
    upload = client.upload(image_bytes, "application/octet-stream")
    failed = client.submit(segment({"upload": upload["id"]}, prompts), wait=60)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == code, failed["error"]
    assert failed["error"]["retryable"] is False
    assert failed["attempts"] == 1

    assert worker.poll() is None, "the worker process died"
    good = client.submit(segment(good_image()), wait=60)
    assert good["status"] == "succeeded", good["error"]


def test_listing_validates_its_query(local_stack: Stack) -> None:
    client = local_stack.client
    assert_error(lambda: client.request("GET", "/v1/jobs?limit=0"), 422, "validation_error", "limit")
    assert_error(lambda: client.request("GET", "/v1/jobs?status=lost"), 422, "validation_error", "status")
    assert_error(lambda: client.request("GET", "/v1/jobs?cursor=%%%"), 422, "validation_error", "cursor")


def test_unknown_route_is_a_json_404(local_stack: Stack) -> None:
    assert_error(lambda: Client(local_stack.api_url).request("GET", "/v1/nothing"), 404, "not_found")


@pytest.mark.parametrize(
    ("prompts", "field"),
    [
        ([{"points": [{"x": 100, "y": 10}, {"x": 320, "y": 10}]}], "prompts.0.points.1"),
        (
            [{"box": {"x0": 1, "y0": 1, "x1": 5, "y1": 5}}, {"box": {"x0": 10, "y0": 10, "x1": 400, "y1": 100}}],
            "prompts.1.box",
        ),
    ],
    ids=["point-outside", "box-outside"],
)
def test_prompts_outside_an_uploaded_image_are_refused_at_submit(
    local_stack: Stack, prompts: list[dict], field: str
) -> None:
    """The upload's size is read from its header when it is stored; the 320×240 scene has x < 320."""
    upload = local_stack.client.upload(png_bytes(scene()), "image/png")
    with pytest.raises(ApiError) as caught:
        local_stack.client.submit(segment({"upload": upload["id"]}, prompts))
    assert caught.value.status == 422
    detail = caught.value.body["error"]["details"][0]
    assert detail["field"] == field and "320x240" in detail["message"]


def test_a_decompression_bomb_is_refused_at_submit_from_its_header(local_stack: Stack) -> None:
    """A 30 000 × 30 000 PNG (a few KB on disk): its header is read at upload, nothing is decoded, 422 at submit.
    (The worker refuses it too, from the header, for images the API cannot size: tests/unit/test_images.py.)"""
    upload = local_stack.client.upload(bomb_png(30_000), "image/png")
    with pytest.raises(ApiError) as caught:
        local_stack.client.submit(segment({"upload": upload["id"]}, GOOD_PROMPTS))
    assert caught.value.status == 422
    error = caught.value.body["error"]
    assert error["code"] == "image_too_large" and "SAMQ_WORKER_MAX_IMAGE_PIXELS" in error["message"]
    assert (
        local_stack.client.submit(
            segment({"upload": local_stack.client.upload(png_bytes(scene()), "image/png")["id"]}, GOOD_PROMPTS), wait=60
        )["status"]
        == "succeeded"
    )
