"""Object storage (a real S3 endpoint: moto's server, behind a TCP proxy the test takes down) unreachable while
jobs are queued and running: a short outage is ridden out, every job succeeds; one longer than the budget fails
the jobs with ``storage_unavailable``, and none hangs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import boto3

from samq.embedded import redis_server
from tests.support.images import b64, png_bytes, scene
from tests.support.moto_server import moto_s3_server
from tests.support.stack import Stack, s3_storage_env, stack_env
from tests.support.tcp_proxy import TcpProxy

BUCKET = "outage"


@contextmanager
def s3_behind_a_proxy(tmp_path: Path, outage_seconds: float) -> Iterator[tuple[Stack, TcpProxy]]:
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
        statuses = {stack.client.job(i)["status"] for i in ids}
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
