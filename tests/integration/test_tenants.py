"""Tenants over real HTTP: isolation on every route, rate and queue limits, idempotent submits."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from samq.client import Client
from samq.errors import ApiError
from tests.integration.conftest import PRESIGN_SECONDS, TENANT_KEYS
from tests.support.images import png_bytes, scene
from tests.support.stack import Stack

IMAGE = png_bytes(scene())


def segment(image: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "segment", "image": image, "prompts": [{"points": [{"x": 100, "y": 100}]}], **extra}


def client(stack: Stack, tenant: str) -> Client:
    return stack.client_for(TENANT_KEYS[tenant])


def status_of(call: Any) -> int:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value.status


def test_another_tenants_ids_are_404_on_every_route(tenant_stack: Stack) -> None:
    alpha, beta = client(tenant_stack, "alpha"), client(tenant_stack, "beta")
    upload = alpha.upload(IMAGE, "image/png")["id"]
    embedded = alpha.submit({"type": "embed", "image": {"upload": upload}}, wait=60)
    done = alpha.submit(segment({"upload": upload}), wait=60)
    assert done["status"] == embedded["status"] == "succeeded"
    job_id = done["id"]

    assert status_of(lambda: beta.get(job_id)) == 404
    assert status_of(lambda: beta.result(job_id)) == 404
    assert status_of(lambda: beta.request("POST", f"/v1/jobs/{job_id}/cancel")) == 404
    assert status_of(lambda: beta.request("GET", f"/v1/jobs/{job_id}/deliveries")) == 404
    assert job_id not in {j["id"] for j in beta.request("GET", "/v1/jobs?limit=100")["data"]}
    assert job_id in {j["id"] for j in alpha.request("GET", "/v1/jobs?limit=100")["data"]}
    # References inside a body are validated against the caller's own ids.
    assert status_of(lambda: beta.submit(segment({"upload": upload}))) == 422
    refine = segment({"upload": upload}, prompts=[{"points": [{"x": 1, "y": 1}], "mask_input": {"job": job_id}}])
    assert status_of(lambda: beta.submit(refine)) == 422
    # Cached embeddings live under the owner's storage prefix: another tenant cannot reuse them.
    image_id = embedded["result"]["summary"]["image_id"]
    stolen = beta.submit(segment({"image_id": image_id}), wait=60)
    assert stolen["status"] == "failed" and stolen["error"]["code"] == "embedding_not_found"
    assert status_of(lambda: Client(tenant_stack.api_url, api_key="wrong").get(job_id)) == 401


def test_presigned_result_urls_expire(tenant_stack: Stack) -> None:
    alpha = client(tenant_stack, "alpha")
    done = alpha.submit(segment({"upload": alpha.upload(IMAGE, "image/png")["id"]}), wait=60)
    url = done["result"]["url"]
    with urllib.request.urlopen(url, timeout=10) as response:
        assert json.loads(response.read())["instances"]
    time.sleep(PRESIGN_SECONDS + 1.5)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10)
    assert caught.value.code == 403


def test_a_tenant_over_its_request_rate_gets_429_with_retry_after(tenant_stack: Stack) -> None:
    slow, alpha = client(tenant_stack, "slow"), client(tenant_stack, "alpha")
    answers: list[int | str] = []
    for _ in range(6):
        try:
            slow.request("GET", "/v1/jobs")
            answers.append(200)
        except ApiError as e:
            answers.append(e.body["error"]["code"])
    assert answers[:3] == [200, 200, 200] and "rate_limited" in answers[3:]
    request = urllib.request.Request(
        f"{tenant_stack.api_url}/v1/jobs", headers={"Authorization": f"Bearer {TENANT_KEYS['slow']}"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 429 and int(caught.value.headers["Retry-After"]) >= 1
    alpha.request("GET", "/v1/jobs")  # other tenants are unaffected


class _Gate(http.server.BaseHTTPRequestHandler):
    """Serves the image only once the test opens the gate: keeps a job running for as long as needed."""

    gate = threading.Event()

    def do_GET(self) -> None:
        self.gate.wait(60)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(IMAGE)))
        self.end_headers()
        self.wfile.write(IMAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def gated_image() -> Iterator[tuple[str, threading.Event]]:
    _Gate.gate = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gate)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/scene.png", _Gate.gate
    _Gate.gate.set()
    server.shutdown()


def test_a_tenant_at_its_queued_job_limit_gets_429_until_one_finishes(
    tenant_stack: Stack, gated_image: tuple[str, threading.Event]
) -> None:
    quota, alpha = client(tenant_stack, "quota"), client(tenant_stack, "alpha")
    url, gate = gated_image
    first = quota.submit(segment({"url": url}))
    with pytest.raises(ApiError) as caught:
        quota.submit(segment({"url": url}))
    assert caught.value.status == 429 and caught.value.body["error"]["code"] == "too_many_jobs"
    assert "SAMQ_API_MAX_QUEUED_JOBS" in caught.value.body["error"]["message"]
    gate.set()
    assert quota.wait(first["id"], timeout=60)["status"] == "succeeded"
    assert quota.submit(segment({"url": url}), wait=60)["status"] == "succeeded"
    del alpha


def test_fifty_parallel_posts_with_one_idempotency_key_create_one_job(tenant_stack: Stack) -> None:
    alpha = client(tenant_stack, "alpha")
    upload = alpha.upload(IMAGE, "image/png")["id"]
    body = json.dumps(segment({"upload": upload}, metadata={"batch": "idem-50"})).encode()

    def post(_: int) -> tuple[int, str, str | None]:
        request = urllib.request.Request(
            f"{tenant_stack.api_url}/v1/jobs",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {TENANT_KEYS['alpha']}",
                "Idempotency-Key": "idem-50",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())["id"], response.headers.get("Idempotent-Replayed")

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(post, range(50)))
    assert len({job_id for _, job_id, _ in answers}) == 1
    assert sorted(status for status, _, _ in answers) == [200] * 49 + [202]
    assert all((replayed == "true") == (status == 200) for status, _, replayed in answers)
    listed = alpha.request("GET", "/v1/jobs?limit=100")["data"]
    assert sum(j["metadata"] == {"batch": "idem-50"} for j in listed) == 1

    changed = json.loads(body) | {"metadata": {"batch": "other"}}
    request = urllib.request.Request(
        f"{tenant_stack.api_url}/v1/jobs",
        data=json.dumps(changed).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {TENANT_KEYS['alpha']}",
            "Idempotency-Key": "idem-50",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 422
    assert json.loads(caught.value.read())["error"]["code"] == "idempotency_key_reused"
