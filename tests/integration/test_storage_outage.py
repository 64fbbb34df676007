"""Object storage (a real S3 endpoint: moto's server, behind a TCP proxy the test takes down) unreachable while
jobs are queued and running: a short outage is ridden out, every job succeeds; one longer than the budget fails
the jobs with ``storage_unavailable``, and none hangs."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import psutil  # type: ignore[import-untyped, unused-ignore]
import pytest

from samq.client import Client
from samq.embedded import redis_server
from samq.errors import ApiError
from storage import keys
from tests.support.images import b64, png_bytes, scene
from tests.support.moto_server import moto_s3_server
from tests.support.stack import Stack, s3_storage_env, stack_env
from tests.support.tcp_proxy import TcpProxy

BUCKET = "outage"


@contextmanager
def s3_behind_a_proxy(
    tmp_path: Path, outage_seconds: float, extra: dict[str, str] | None = None
) -> Iterator[tuple[Stack, TcpProxy]]:
    with moto_s3_server() as endpoint, redis_server(tmp_path / "redis", appendonly=False) as redis_url:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
        )
        s3.create_bucket(Bucket=BUCKET)
        proxy = TcpProxy(int(urlsplit(endpoint).port or 0))
        storage = s3_storage_env(proxy.url, BUCKET) | {
            "SAMQ_WORKER_STORAGE_OUTAGE_SECONDS": str(outage_seconds),
            "SAMQ_STORAGE_CONNECT_TIMEOUT": "1",
            "SAMQ_STORAGE_MAX_RETRIES": "1",
            **(extra or {}),
        }
        stack = Stack(redis_url, stack_env(redis_url, storage), logs=tmp_path)
        try:
            stack.start_api()
            stack.start_worker("interactive")
            yield stack, proxy
        finally:
            proxy.down()
            stack.stop()


def submit(stack: Stack, count: int) -> list[str]:
    ids = []
    for i in range(count):
        image = {"base64": b64(png_bytes(scene(seed=100 + i)))}  # stored in S3 at submit: S3 is up
        job = stack.client.submit({"type": "segment", "image": image, "prompts": [{"points": [{"x": 50, "y": 50}]}]})
        ids.append(job["id"])
    return ids


def test_a_30_second_outage_is_ridden_out_by_every_queued_and_running_job(tmp_path: Path) -> None:
    with s3_behind_a_proxy(tmp_path, outage_seconds=120) as (stack, proxy):
        ids = submit(stack, 24)
        proxy.down()
        time.sleep(30)
        statuses = {stack.client.get(i)["status"] for i in ids}
        assert "failed" not in statuses, statuses
        proxy.up()
        done = [stack.client.wait(i, timeout=300) for i in ids]
        assert [j["status"] for j in done] == ["succeeded"] * 24, [j["error"] for j in done if j["error"]]


def test_an_outage_past_the_budget_fails_the_jobs_and_none_hangs(tmp_path: Path) -> None:
    with s3_behind_a_proxy(tmp_path, outage_seconds=2) as (stack, proxy):
        ids = submit(stack, 2)
        proxy.down()
        done = [stack.client.wait(i, timeout=120) for i in ids]
        assert [(j["status"], j["error"]["code"]) for j in done] == [("failed", "storage_unavailable")] * 2
        assert all(j["attempts"] == 3 for j in done)  # each attempt rode out the budget, then the job was retried
        assert "SAMQ_WORKER_STORAGE_OUTAGE_SECONDS" in done[0]["error"]["message"]


def test_a_frozen_s3_slows_uploads_never_health_checks_or_status_reads(tmp_path: Path) -> None:
    """S3 stops answering (SIGSTOP of the endpoint) for 45 s while 24 clients upload at once."""
    with s3_behind_a_proxy(tmp_path, outage_seconds=60, extra={"SAMQ_API_STORAGE_TIMEOUT_SECONDS": "5"}) as (
        stack,
        proxy,
    ):
        [job_id] = submit(stack, 1)
        client = Client(stack.api_url, timeout=60, max_retries=0)
        [moto] = [p for p in psutil.process_iter() if _listens(p, proxy.target_port)]
        moto.send_signal(signal.SIGSTOP)
        try:
            answers: list[tuple[int, float]] = []

            def upload(i: int) -> None:
                started = time.monotonic()
                try:
                    client.upload(png_bytes(scene(seed=200 + i)), "image/png")
                    answers.append((201, time.monotonic() - started))
                except ApiError as e:
                    answers.append((e.status, time.monotonic() - started))

            uploads = [threading.Thread(target=upload, args=(i,)) for i in range(24)]
            for thread in uploads:
                thread.start()
            polls: list[float] = []
            frozen_until = time.monotonic() + 45
            while time.monotonic() < frozen_until:
                for path in ("/healthz", f"/v1/jobs/{job_id}", "/v1/jobs?limit=5"):
                    started = time.monotonic()
                    client.request("GET", path)
                    polls.append((time.monotonic() - started) * 1000)
                time.sleep(0.05)
            for thread in uploads:
                thread.join(60)
        finally:
            moto.send_signal(signal.SIGCONT)
        polls.sort()
        assert polls[int(len(polls) * 0.99)] < 200, polls[-10:]
        assert len(answers) == 24 and all(status == 503 for status, _ in answers), answers
        assert max(seconds for _, seconds in answers) < 30  # the API's storage timeouts, not S3's silence
        assert client.upload(png_bytes(scene(seed=300)), "image/png")["bytes"] > 0  # and back once S3 answers


def _listens(process: psutil.Process, port: int) -> bool:
    try:
        return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp"))
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return False


def test_the_python_client_retries_a_503_after_retry_after_until_storage_is_back(tmp_path: Path) -> None:
    with s3_behind_a_proxy(tmp_path, outage_seconds=60) as (stack, proxy):
        image = png_bytes(scene(seed=300))
        proxy.down()
        with pytest.raises(ApiError) as refused:
            Client(stack.api_url, max_retries=0).upload(image, "image/png")
        assert refused.value.status == 503 and refused.value.code == "storage_unavailable"
        assert refused.value.retry_after == 5
        threading.Timer(2, proxy.up).start()
        started = time.monotonic()
        upload = Client(stack.api_url).upload(image, "image/png")  # refused once more, then sent again after 5 s
        assert upload["id"].startswith("upl_") and time.monotonic() - started >= 5
        assert stack.objects.get(keys.upload("default", upload["id"])) == image
