"""A worker's storage round trips on a real S3 endpoint (moto, behind a TCP proxy that counts connections and
requests): a stream of segment jobs reuses the worker's kept-alive connections, and each job makes only the
requests its result needs (the image, the shared embedding tier, one PUT per file)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest

from samq.embedded import redis_server
from storage import keys
from tests.support.images import png_bytes, scene
from tests.support.stack import TEST_IMAGE_SIZE, Stack, s3_storage_env, stack_env
from tests.support.tcp_proxy import TcpProxy

BUCKET = "round-trips"
MODEL = "sam2.1_hiera_tiny"
JOBS = 10
SEED = 7100  # images no other test uses: every job encodes (no embedding is cached anywhere)
BOX = {"x0": 40, "y0": 30, "x1": 200, "y1": 170}


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[tuple[Stack, TcpProxy]]:
    """A stack whose API reaches S3 directly and whose one worker reaches it through the counting proxy."""
    root = tmp_path_factory.mktemp("round-trips")
    s3 = boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    s3.create_bucket(Bucket=BUCKET)
    proxy = TcpProxy(int(urlsplit(s3_endpoint).port or 0))
    with redis_server(root / "redis", appendonly=False) as redis_url:
        stack = Stack(redis_url, stack_env(redis_url, s3_storage_env(s3_endpoint, BUCKET)), logs=root)
        try:
            stack.start_api()
            stack.start_worker("interactive", {"SAMQ_STORAGE_S3_ENDPOINT_URL": proxy.url})
            yield stack, proxy
        finally:
            proxy.down()
            stack.stop()


def run_jobs(stack: Stack, seeds: range) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Upload one new image per seed, then a segment job on each (PNG masks too); (upload, finished job) pairs."""
    uploads = [stack.client.upload(png_bytes(scene(seed=seed)), "image/png") for seed in seeds]
    ids = []
    for upload in uploads:
        body = {
            "type": "segment",
            "model": MODEL,
            "image": {"upload": upload["id"]},
            "prompts": [{"points": [{"x": 120, "y": 118}]}],
            "output": {"formats": ["rle", "png"]},
        }
        ids.append(stack.client.submit(body)["id"])
    return list(zip(uploads, [stack.client.wait(i, timeout=120) for i in ids], strict=True))


def test_a_stream_of_segment_jobs_reuses_connections_and_requests_only_what_it_needs(
    counted: tuple[Stack, TcpProxy],
) -> None:
    stack, proxy = counted
    run_jobs(stack, range(SEED, SEED + 2))  # warm-up: the worker loads its model and opens its first connections
    proxy.reset()

    ran = run_jobs(stack, range(SEED + 2, SEED + 2 + JOBS))

    traffic = proxy.traffic()
    for _, job in ran:
        assert job["status"] == "succeeded", job["error"]
        assert job["result"]["summary"]["embedding"] == "miss"
    expected: Counter[tuple[str, str]] = Counter()
    for upload, job in ran:
        path = f"/{BUCKET}/" + "{}"
        embedding = keys.embedding("default", MODEL, TEST_IMAGE_SIZE, upload["sha256"])
        expected[("GET", path.format(keys.upload("default", upload["id"])))] += 1
        expected[("GET", path.format(embedding))] += 1  # the shared tier: absent, so the worker encodes
        for name in ("masks/0.png", "low_res_logits.npy", "result.json"):
            expected[("PUT", path.format(keys.job_file("default", job["id"], name)))] += 1
    assert traffic.unparsed == 0
    assert Counter(traffic.requests) == expected  # 5 a job, nothing written twice, nothing else
    # Kept alive: at most one new connection per request a worker has in flight at once (a job's 3 PUTs behind the
    # next job's 2 reads ahead: worker.pipeline.overlap), however many jobs run.
    in_flight = 5
    assert traffic.connections <= in_flight, (
        f"{traffic.connections} new connections for {len(traffic.requests)} requests"
    )


def test_a_second_job_on_an_upload_this_worker_embedded_reads_nothing(counted: tuple[Stack, TcpProxy]) -> None:
    """The upload's record names its SHA-256: the worker finds the embedding in its memory without reading the
    image (only the result's files are written)."""
    stack, proxy = counted
    [(upload, first)] = run_jobs(stack, range(SEED + 50, SEED + 51))
    assert first["result"]["summary"]["embedding"] == "miss"
    proxy.reset()
    body = {"type": "segment", "model": MODEL, "image": {"upload": upload["id"]}, "prompts": [{"box": BOX}]}
    second = stack.client.submit(body, wait=60)
    assert second["status"] == "succeeded", second["error"]
    assert second["result"]["summary"]["embedding"] == "memory"
    assert second["result"]["summary"]["image_id"] == upload["sha256"]
    methods = Counter(method for method, _ in proxy.traffic().requests)
    assert methods == {"PUT": 2}, proxy.traffic().requests  # low_res_logits.npy and result.json; no GET at all
    annotated = stack.client.submit(body | {"output": {"formats": ["rle"], "annotated": True}}, wait=60)
    assert annotated["status"] == "succeeded" and "annotated.png" in {f["name"] for f in annotated["result"]["files"]}
