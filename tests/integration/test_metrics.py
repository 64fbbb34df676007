"""``GET /metrics`` of a real stack (Redis, the API over HTTP, a real worker), read with prometheus-client's parser:
every series there at zero on a fresh stack, then moved by exactly what the jobs, deliveries and requests did."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tasks.jobs import JobStatus
from tasks.names import JOB_TYPES, Queue
from tasks.stats import QUEUE_WAIT_BUCKETS, RUNTIME_BUCKETS
from tests.support.images import png_bytes, scene
from tests.support.receiver import Receiver, receiving
from tests.support.stack import Stack

Labels = frozenset[tuple[str, str]]
BOX = {"x0": 10, "y0": 8, "x1": 60, "y1": 50}


class Scrape:
    """One scrape of ``/metrics``: sample name and labels → value."""

    def __init__(self, api_url: str) -> None:
        with urllib.request.urlopen(api_url + "/metrics", timeout=10) as response:
            text = response.read().decode()
        self.samples: dict[tuple[str, Labels], float] = {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        """The sample's value; a KeyError when the series is absent."""
        return self.samples[(name, frozenset(labels.items()))]

    def by(self, name: str, label: str) -> dict[str, float]:
        """``label``'s value → the sample's value, over every series of ``name`` (with that one label)."""
        return {dict(labels)[label]: v for (n, labels), v in self.samples.items() if n == name and len(labels) == 1}

    def histogram(self, name: str, **labels: str) -> tuple[list[float], float, float]:
        """Bucket counts in bound order, the count and the sum."""
        bounds = QUEUE_WAIT_BUCKETS if "queue_wait" in name else RUNTIME_BUCKETS
        les = ["+Inf" if b == float("inf") else repr(b) for b in bounds]
        buckets = [self(f"{name}_bucket", le=le, **labels) for le in les]
        return buckets, self(f"{name}_count", **labels), self(f"{name}_sum", **labels)


def segment(image: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"type": "segment", "image": image, "prompts": [{"box": BOX}], **extra}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def seconds_between(job: dict[str, Any], start: str, end: str) -> float:
    return (datetime.fromisoformat(job[end]) - datetime.fromisoformat(job[start])).total_seconds()


def check_all_zero(m: Scrape) -> None:
    assert m.by("samq_queue_depth", "queue") == {q.value: 0 for q in Queue}
    assert m.by("samq_workers_alive", "queue") == {q.value: 0 for q in Queue}
    assert m.by("samq_jobs_running", "type") == dict.fromkeys(JOB_TYPES, 0)
    assert m.by("samq_jobs_total", "status") == {s.value: 0 for s in JobStatus}
    for job_type in JOB_TYPES:
        for name in ("samq_job_queue_wait_seconds", "samq_job_run_seconds"):
            buckets, count, total = m.histogram(name, type=job_type)
            assert (set(buckets), count, total) == ({0}, 0, 0), (name, job_type)
    assert m.by("samq_webhook_deliveries_total", "outcome") == dict.fromkeys(
        ["delivered", "retrying", "gone", "exhausted"], 0
    )
    assert m.by("samq_batch_items_total", "outcome") == dict.fromkeys(["succeeded", "failed", "not_run"], 0)
    assert m.by("samq_embedding_cache_hits_total", "tier") == {"memory": 0, "shared": 0}
    assert m("samq_embedding_cache_misses_total") == 0
    for route, method in [("/v1/jobs", "POST"), ("/v1/jobs", "GET"), ("/v1/jobs/<job_id>", "GET"), ("/metrics", "GET")]:
        assert m("samq_http_request_duration_seconds_count", route=route, method=method) == 0, route
    assert m("samq_http_requests_total", route="/readyz", method="GET", status="200") >= 1, "the stack's probe"


def test_every_series_is_there_at_zero_and_counts_what_happened(trusting_stack: Stack) -> None:
    stack = trusting_stack  # its own Redis: every counter starts at zero
    client = stack.client
    check_all_zero(Scrape(stack.api_url))

    image = {"upload": client.upload(png_bytes(scene(96, 64, seed=1)), "image/png")["id"]}
    first = client.submit(segment(image))
    queued = Scrape(stack.api_url)
    assert queued("samq_queue_depth", queue="interactive") == 1
    assert queued("samq_jobs_total", status="queued") == 1
    assert queued("samq_http_requests_total", route="/v1/jobs", method="POST", status="202") == 1

    worker = stack.start_worker()  # the first job waited for it: a queue wait of seconds
    assert Scrape(stack.api_url).by("samq_workers_alive", "queue") == {q.value: 1 for q in Queue}
    first = client.wait(first["id"], timeout=120)
    with receiving(Receiver(secrets=lambda: [client.request("GET", "/v1/webhooks/secret")["secret"]])) as receiver:
        hook = {"url": f"{receiver.url}/flaky", "events": ["job.succeeded"]}  # 500, 500, then 200
        second = client.wait(client.submit(segment(image, webhook=hook))["id"], timeout=120)
        unknown = {"image_id": "0" * 64}  # no embedding cached under it: embedding_not_found, in the worker
        failing = client.wait(client.submit(segment(unknown))["id"], timeout=120)
        blobs = [png_bytes(scene(80, 80, seed=i)) for i in range(4)]
        blobs[2] = blobs[2][:60]  # a truncated image: the item fails, the batch stops (max_failure_rate 0)
        items = [{"upload": client.upload(blob, "image/png")["id"]} for blob in blobs]
        template = {"type": "segment", "prompts": [{"box": BOX}]}
        body = {"type": "batch", "template": template, "inputs": {"items": items}, "max_failure_rate": 0}
        batch = client.wait(client.submit(body)["id"], timeout=300)
        deliveries = f"/v1/jobs/{second['id']}/deliveries"  # logged with the outcome's count, at once
        wait_until(lambda: len(client.request("GET", deliveries)["data"]) == 3, "three delivery attempts")
    assert [first["status"], second["status"], failing["status"], batch["status"]] == [
        "succeeded", "succeeded", "failed", "failed"
    ]  # fmt: skip
    assert (first["result"]["summary"]["embedding"], second["result"]["summary"]["embedding"]) == ("miss", "memory")

    m = Scrape(stack.api_url)
    assert m.by("samq_jobs_total", "status") == {"queued": 4, "running": 4, "succeeded": 2, "failed": 2, "canceled": 0}
    assert m.by("samq_jobs_running", "type") == dict.fromkeys(JOB_TYPES, 0)
    assert m.by("samq_queue_depth", "queue") == {q.value: 0 for q in Queue}
    _, waits, waited = m.histogram("samq_job_queue_wait_seconds", type="segment")
    assert waits == 3
    expected = sum(seconds_between(job, "created_at", "started_at") for job in (first, second, failing))
    assert abs(waited - expected) < 0.01, "created → started of each job's first attempt"
    assert seconds_between(first, "created_at", "started_at") > 1, "the first job waited for the worker"
    buckets, runs, ran = m.histogram("samq_job_run_seconds", type="segment")
    assert runs == 3 and buckets == sorted(buckets)
    expected = sum(seconds_between(job, "started_at", "finished_at") for job in (first, second, failing))
    assert abs(ran - expected) < 0.01
    assert m.histogram("samq_job_run_seconds", type="batch")[1] == 1
    assert m.histogram("samq_job_queue_wait_seconds", type="batch")[1] == 1
    assert m.histogram("samq_job_run_seconds", type="embed")[1] == 0

    assert m.by("samq_embedding_cache_hits_total", "tier") == {"memory": 1, "shared": 0}
    assert m("samq_embedding_cache_misses_total") == 1
    summary = batch["result"]["summary"]
    assert m.by("samq_batch_items_total", "outcome") == {k: summary[k] for k in ("succeeded", "failed", "not_run")}
    assert (summary["succeeded"], summary["failed"], summary["not_run"]) == (2, 1, 1)
    assert m.by("samq_webhook_deliveries_total", "outcome") == {
        "delivered": 1, "retrying": 2, "gone": 0, "exhausted": 0
    }  # fmt: skip

    assert m("samq_http_requests_total", route="/v1/jobs", method="POST", status="202") == 4
    assert m("samq_http_requests_total", route="/v1/uploads", method="POST", status="201") == 5
    assert m("samq_http_request_duration_seconds_count", route="/v1/jobs", method="POST") == 4
    polls = sum(v for (n, labels), v in m.samples.items() if n == "samq_http_requests_total" and
                ("route", "/v1/jobs/<job_id>") in labels)  # fmt: skip
    assert polls == m("samq_http_request_duration_seconds_count", route="/v1/jobs/<job_id>", method="GET") > 4
    assert httpx.get(f"{stack.api_url}/v1/jobs/job_nope").status_code == 404
    assert httpx.get(f"{stack.api_url}/nowhere").status_code == 404
    after = Scrape(stack.api_url)
    assert after("samq_http_requests_total", route="/v1/jobs/<job_id>", method="GET", status="404") == 1
    assert after("samq_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert after("samq_http_requests_total", route="/metrics", method="GET", status="200") == 4, "not this one yet"

    stack.stop_worker(worker)  # a worker that stops leaves its queues at once
    assert Scrape(stack.api_url).by("samq_workers_alive", "queue") == {q.value: 0 for q in Queue}
