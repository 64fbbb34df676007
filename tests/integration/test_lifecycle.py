"""Cancellation, the shared embedding tier across worker processes, and the operations routes."""

from __future__ import annotations

import json
import time
import urllib.request

from tests.support.images import b64, png_bytes, scene
from tests.support.stack import Stack

PROMPTS = [{"points": [{"x": 100, "y": 100}]}]


def segment(image: dict[str, str]) -> dict[str, object]:
    return {"type": "segment", "image": image, "prompts": PROMPTS}


def test_cancel_of_a_queued_job_is_immediate_and_the_worker_skips_it(bare_stack: Stack) -> None:
    client = bare_stack.client
    job = client.submit(segment({"base64": b64(png_bytes(scene()))}))
    canceled = client.request("POST", f"/v1/jobs/{job['id']}/cancel")
    assert canceled["status"] == "canceled" and canceled["finished_at"] is not None

    bare_stack.start_worker("interactive")
    after = client.submit(segment({"base64": b64(png_bytes(scene()))}), wait=60)
    assert after["status"] == "succeeded"
    final = client.get(job["id"])
    assert final["status"] == "canceled" and final["attempts"] == 0


def test_cancel_of_a_running_job_stops_it_at_the_next_checkpoint(bare_stack: Stack) -> None:
    client = bare_stack.client
    bare_stack.start_worker("interactive", {"SAMQ_IMAGE_SIZE": "1024"})
    job = client.submit(segment({"base64": b64(png_bytes(scene(640, 480)))}))
    deadline = time.monotonic() + 60
    while client.get(job["id"])["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    flagged = client.request("POST", f"/v1/jobs/{job['id']}/cancel")
    assert flagged["cancel_requested"] is True
    done = client.wait(job["id"], timeout=60)
    assert done["status"] == "canceled"
    assert done["result"] is None


def test_an_embed_on_one_worker_serves_a_segment_on_another(bare_stack: Stack) -> None:
    client = bare_stack.client
    upload = client.upload(png_bytes(scene(seed=11)), "image/png")
    first = bare_stack.start_worker("interactive")
    embedded = client.submit({"type": "embed", "image": {"upload": upload["id"]}}, wait=60)
    assert embedded["status"] == "succeeded", embedded["error"]
    assert embedded["result"]["summary"]["embedding"] == "miss"
    bare_stack.kill_worker(first)

    bare_stack.start_worker("interactive")  # a different process: its in-memory cache is empty
    image_id = embedded["result"]["summary"]["image_id"]
    job = client.submit(segment({"image_id": image_id}), wait=60)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["summary"]["embedding"] == "shared"

    unknown = client.submit(segment({"image_id": "0" * 64}), wait=60)
    assert unknown["status"] == "failed"
    assert unknown["error"]["code"] == "embedding_not_found"


def test_operations_routes(local_stack: Stack) -> None:
    client = local_stack.client
    assert client.request("GET", "/healthz") == {"status": "ok"}
    assert client.request("GET", "/readyz") == {"status": "ready"}
    for seed in range(3):
        client.submit(segment({"base64": b64(png_bytes(scene(seed=seed)))}), wait=60)
    with urllib.request.urlopen(local_stack.api_url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'samq_queue_depth{queue="interactive"}' in metrics
    assert 'samq_jobs_total{status="succeeded"}' in metrics
    assert 'samq_job_run_seconds_count{type="segment"}' in metrics
    spec = client.request("GET", "/openapi.json")
    assert spec["openapi"].startswith("3.")
    assert "SegmentSpec" in spec["components"]["schemas"]
    assert "JobObject" in spec["components"]["schemas"]
    listed = client.request("GET", "/v1/jobs?limit=2&status=succeeded")
    assert len(listed["data"]) == 2 and all(j["status"] == "succeeded" for j in listed["data"])
    assert listed["next_cursor"]
    nxt = client.request("GET", f"/v1/jobs?limit=2&status=succeeded&cursor={listed['next_cursor']}")
    assert {j["id"] for j in nxt["data"]}.isdisjoint({j["id"] for j in listed["data"]})
    json.dumps(spec)
