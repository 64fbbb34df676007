"""Signed webhooks end to end: real API, Redis and worker; a receiver that verifies with ``standardwebhooks``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from samq.client import Client
from samq.embedded import MODEL_QUEUES, free_port, redis_server
from samq.errors import ApiError
from tests.integration.conftest import TENANT_KEYS
from tests.support.images import b64, png_bytes, scene
from tests.support.receiver import Receiver, receiving
from tests.support.stack import Stack, local_storage_env, stack_env

IMAGE = b64(png_bytes(scene()))


def job(url: str, events: list[str]) -> dict[str, Any]:
    return {
        "type": "segment",
        "image": {"base64": IMAGE},
        "prompts": [{"points": [{"x": 100, "y": 100}]}],
        "webhook": {"url": url, "events": events},
    }


@pytest.fixture
def alpha(tenant_stack: Stack) -> Client:
    return tenant_stack.client_for(TENANT_KEYS["alpha"])


@pytest.fixture
def receiver(alpha: Client) -> Iterator[Receiver]:
    with receiving(Receiver(secrets=lambda: [alpha.request("GET", "/v1/webhooks/secret")["secret"]])) as r:
        yield r


def deliveries(client: Client, job_id: str, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        log = client.request("GET", f"/v1/jobs/{job_id}/deliveries")["data"]
        if len(log) >= count or time.monotonic() > deadline:
            return log
        time.sleep(0.2)


def test_a_failing_receiver_gets_the_event_again_with_the_same_id(alpha: Client, receiver: Receiver) -> None:
    done = alpha.submit(job(f"{receiver.url}/flaky", ["job.started", "job.succeeded"]), wait=60)
    assert done["status"] == "succeeded"
    assert done["webhook"]["events"] == ["job.started", "job.succeeded"]
    seen = receiver.wait_for(lambda ds: sum(d.status == 200 for d in ds if d.path == "/flaky") == 2)
    flaky = [d for d in seen if d.path == "/flaky"]
    assert all(d.verified for d in flaky), "every delivery verifies with the reference implementation"
    by_id: dict[str, list[int]] = {}
    for d in flaky:
        by_id.setdefault(d.webhook_id, []).append(d.status)
        assert abs(d.received_at - d.timestamp) < 5, "each attempt is signed with a fresh timestamp"
    assert sorted(by_id.values()) == [[500, 500, 200], [500, 500, 200]], "one id per event, kept across retries"
    bodies = {d.body["type"]: d.body for d in flaky if d.status == 200}
    assert bodies["job.succeeded"]["data"]["id"] == done["id"]
    assert bodies["job.succeeded"]["data"]["status"] == "succeeded"
    assert bodies["job.succeeded"]["data"]["result"]["files"], "the job object carries presigned result files"
    assert bodies["job.started"]["data"]["status"] == "running"

    log = deliveries(alpha, done["id"], 6)
    assert [(a["attempt"], a["status_code"], a["outcome"]) for a in log if a["type"] == "job.succeeded"] == [
        (1, 500, "retrying"),
        (2, 500, "retrying"),
        (3, 200, "delivered"),
    ]
    assert alpha.get(done["id"])["status"] == "succeeded", "deliveries never change the job"


def test_410_stops_retries_and_redirects_are_not_followed(alpha: Client, receiver: Receiver) -> None:
    gone = alpha.submit(job(f"{receiver.url}/gone", ["job.succeeded"]), wait=60)
    moved = alpha.submit(job(f"{receiver.url}/redirect", ["job.succeeded"]), wait=60)
    assert gone["status"] == moved["status"] == "succeeded"
    assert [a["outcome"] for a in deliveries(alpha, gone["id"], 1)] == ["gone"]
    redirected = deliveries(alpha, moved["id"], 3)
    assert [(a["status_code"], a["outcome"]) for a in redirected[:3]] == [(302, "retrying")] * 3
    time.sleep(1)
    assert len(deliveries(alpha, gone["id"], 1)) == 1, "nothing after a 410"
    assert receiver.of("/target") == [], "a redirect is never followed"


def test_a_webhook_url_that_is_not_public_is_refused_at_submit(alpha: Client) -> None:
    port = free_port()
    hostile = ("127.0.0.2", "[::1]", "0.0.0.0", "[::ffff:127.0.0.2]", "2130706434")  # 127.0.0.1 is allow-listed here
    for url in (f"http://{host}:{port}/hook" for host in hostile):
        with pytest.raises(ApiError) as caught:
            alpha.submit(job(url, ["job.succeeded"]))
        assert caught.value.status == 422
        assert caught.value.body["error"]["code"] == "url_refused"
        assert caught.value.body["error"]["details"][0]["field"] == "webhook.url"


def test_rotating_the_secret_keeps_the_old_one_valid_meanwhile(alpha: Client) -> None:
    old = alpha.request("GET", "/v1/webhooks/secret")["secret"]
    rotated = alpha.request("POST", "/v1/webhooks/secret")
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != old
    assert rotated["previous_valid_until"] is not None
    with (
        receiving(Receiver(secrets=lambda: [old])) as only_old,
        receiving(Receiver(secrets=lambda: [rotated["secret"]])) as only_new,
    ):
        for r in (only_old, only_new):
            alpha.submit(job(f"{r.url}/ok", ["job.succeeded"]), wait=60)
            r.wait_for(lambda ds: len(ds) == 1)
            assert [d.verified for d in r.deliveries] == [True]


def test_the_outbox_survives_a_killed_worker_and_a_redis_restart(tmp_path: Path) -> None:
    """The receiver is down while the worker is killed and Redis restarts (AOF on); the event arrives later."""
    redis_port, hook_port = free_port(), free_port()
    with ExitStack() as stack:
        redis_dir = tmp_path / "redis"
        redis = stack.enter_context(ExitStack())
        url = redis.enter_context(redis_server(redis_dir, port=redis_port, appendonly=True))
        env = {**local_storage_env(tmp_path / "objects"), "SAMQ_ALLOW_PRIVATE_URLS": "127.0.0.1/32"}
        deployment = Stack(url, stack_env(url, env), logs=tmp_path)
        stack.callback(deployment.stop)
        deployment.start_api()
        worker = deployment.start_worker()
        client = deployment.client
        secret = client.request("GET", "/v1/webhooks/secret")["secret"]

        done = client.submit(job(f"http://127.0.0.1:{hook_port}/ok", ["job.succeeded"]), wait=60)
        assert done["status"] == "succeeded"
        failed = deliveries(client, done["id"], 2)
        assert len(failed) >= 2 and all(a["status_code"] is None for a in failed), "receiver down: refused"

        deployment.kill_worker(worker)
        redis.close()  # redis-server stops (SIGTERM: AOF flushed) ...
        redis = stack.enter_context(ExitStack())
        redis.enter_context(redis_server(redis_dir, port=redis_port, appendonly=True))  # ... and comes back
        deployment.start_worker()

        with receiving(Receiver(secrets=lambda: [secret]), port=hook_port) as receiver:
            (delivery,) = receiver.wait_for(lambda ds: len(ds) >= 1)
            assert delivery.verified and delivery.status == 200
            assert delivery.body["data"]["id"] == done["id"]
            log = deliveries(client, done["id"], len(failed) + 1)
            assert log[-1]["outcome"] == "delivered"
            assert {a["event_id"] for a in log} == {delivery.webhook_id}


def test_a_slow_receiver_does_not_hold_up_another_tenants_delivery(tmp_path: Path) -> None:
    """One tenant's receiver answers after 30 s; the other's event still arrives within a couple of seconds, on
    the io worker's threads (``samq worker --queues io``)."""
    keys = {"SAMQ_API_KEYS": "slowpoke:k-slow,prompt:k-fast", "SAMQ_ALLOW_PRIVATE_URLS": "127.0.0.1/32"}
    with ExitStack() as stack:
        url = stack.enter_context(redis_server(tmp_path / "redis", appendonly=False))
        deployment = Stack(url, stack_env(url, {**local_storage_env(tmp_path / "objects"), **keys}), logs=tmp_path)
        stack.callback(deployment.stop)
        deployment.start_api()
        deployment.start_worker(MODEL_QUEUES)
        deployment.start_worker("io")
        slow, fast = deployment.client_for("k-slow"), deployment.client_for("k-fast")
        secret = fast.request("GET", "/v1/webhooks/secret")["secret"]
        with receiving(Receiver(secrets=lambda: [secret])) as receiver:
            for _ in range(3):  # more slow deliveries than a small pool has slots
                assert slow.submit(job(f"{receiver.url}/slow", ["job.succeeded"]), wait=60)["status"] == "succeeded"
            time.sleep(0.5)  # the slow deliveries are under way
            done = fast.submit(job(f"{receiver.url}/ok", ["job.succeeded"]), wait=60)
            assert done["status"] == "succeeded"
            finished = datetime.fromisoformat(done["finished_at"]).timestamp()
            (delivery,) = receiver.wait_for(lambda ds: any(d.path == "/ok" for d in ds), timeout=30)[-1:]
            assert delivery.path == "/ok" and delivery.verified
            assert delivery.received_at - finished < 2.0, delivery.received_at - finished
