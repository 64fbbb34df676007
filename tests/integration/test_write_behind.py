"""A job with another one waiting behind it has its result written behind that job's model work
(``worker.pipeline.overlap``): its Celery task has returned and its message is acknowledged while its files are still
on their way to storage. A worker killed then (kill -9 of parent and child) loses nothing: the attempt's lease
lapses, the reaper runs the job again, and it ends ``succeeded`` once, with complete files; so does the job behind
it."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from samq.embedded import redis_server
from tasks.broker import connect
from tests.support.images import png_bytes, scene
from tests.support.results import download, files_of
from tests.support.stack import Stack, s3_storage_env, stack_env
from tests.support.tcp_proxy import TcpProxy

BUCKET = "samq-test"  # the session's S3 endpoint has it (conftest)
FULL_SIZE = {"SAMQ_IMAGE_SIZE": "1024"}  # seconds of model work: time to see the reads end before the writes start
STALLED = 60.0  # the proxy's round trip once the reads are done: the result's PUTs take 30 s to arrive


@pytest.fixture
def far_stack(tmp_path: Path, s3_endpoint: str) -> Iterator[tuple[Stack, TcpProxy]]:
    """API on S3 directly; workers on S3 through a proxy the test can slow down."""
    proxy = TcpProxy(int(urlsplit(s3_endpoint).port or 0))
    with redis_server(tmp_path / "redis", appendonly=False) as redis_url:
        stack = Stack(redis_url, stack_env(redis_url, s3_storage_env(s3_endpoint, BUCKET)), logs=tmp_path)
        try:
            stack.start_api()
            yield stack, proxy
        finally:
            proxy.down()
            stack.stop()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_9_while_a_finished_jobs_files_are_written_loses_nothing(far_stack: tuple[Stack, TcpProxy]) -> None:
    stack, proxy = far_stack
    client, broker = stack.client, connect(stack.queue_settings)
    worker = stack.start_worker("interactive", {**FULL_SIZE, "SAMQ_STORAGE_S3_ENDPOINT_URL": proxy.url})
    upload = client.upload(png_bytes(scene(640, 480, seed=8800)), "image/png")
    body = {
        "type": "segment",
        "image": {"upload": upload["id"]},
        "prompts": [{"points": [{"x": 300, "y": 200}]}],
        "output": {"formats": ["rle", "png"]},
    }
    job_id = client.submit(body)["id"]
    behind = client.submit(body | {"prompts": [{"points": [{"x": 100, "y": 100}]}]})["id"]  # waits in the queue

    def requests(method: str) -> list[str]:
        return [target for verb, target in proxy.traffic().requests if verb == method]

    wait_until(lambda: len(requests("GET")) >= 2, "the image and the shared tier read")  # both at 0 ms
    time.sleep(0.5)  # their answers are back: the model runs for seconds now
    proxy.rtt = STALLED
    wait_until(lambda: any(job_id in target for target in requests("PUT")), "the result's first write", 180)

    # The model work is over and the task has returned: Celery acknowledged its message and handed the worker the
    # next job. Only the lease, renewed by the write-behind thread, still holds the first job.
    def messages() -> list[str]:
        return [str(m) for m in [*broker.hvals("unacked"), *broker.lrange("interactive", 0, -1)]]

    wait_until(lambda: not any(job_id in m for m in messages()), "the first job's message acknowledged")
    assert any(behind in m for m in messages())
    running = client.get(job_id)
    assert (running["status"], running["attempts"]) == ("running", 1)
    stack.kill_worker(worker)
    proxy.down()  # the killed worker's writes still queued in the proxy never arrive

    stack.start_worker("interactive", FULL_SIZE)  # S3 directly; its reaper finds the lapsed lease
    done = client.wait(job_id, timeout=180, interval=0.05)
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    files = files_of(done)
    assert sorted(files) == ["low_res_logits.npy", "masks/0.png", "result.json"]
    document = json.loads(download(files["result.json"]))
    [instance] = document["instances"]
    mask = mask_utils.decode({"size": instance["rle"]["size"], "counts": instance["rle"]["counts"].encode()})
    assert mask.shape == (480, 640) and int(mask.sum()) == instance["area"] > 0
    logits = np.load(io.BytesIO(download(files["low_res_logits.npy"])), allow_pickle=False)
    assert logits.shape == (1, 256, 256)
    assert download(files["masks/0.png"]).startswith(b"\x89PNG")

    reap = float(stack.env["SAMQ_REAP_INTERVAL_SECONDS"])
    time.sleep(3 * reap + float(stack.env["SAMQ_LEASE_SECONDS"]))  # nothing runs it again, nothing rewrites it
    later = client.get(job_id)
    assert (later["status"], later["attempts"], later["finished_at"]) == ("succeeded", 2, done["finished_at"])
    assert client.wait(behind, timeout=180, interval=0.05)["status"] == "succeeded"


def test_a_worker_stopped_with_a_result_still_being_written_finishes_it_first(
    far_stack: tuple[Stack, TcpProxy],
) -> None:
    """A warm shutdown (SIGTERM) lets the pool process finish the result it writes behind before it exits: the job
    succeeds on its first attempt instead of waiting for the reaper."""
    stack, proxy = far_stack
    client = stack.client
    worker = stack.start_worker("interactive", {**FULL_SIZE, "SAMQ_STORAGE_S3_ENDPOINT_URL": proxy.url})

    def segment(upload: dict[str, Any]) -> dict[str, Any]:
        return {"type": "segment", "image": {"upload": upload["id"]}, "prompts": [{"points": [{"x": 300, "y": 200}]}]}

    # The first job keeps the worker busy (and loads the model) while the other two are queued, so that when the
    # second starts, the third is peeked at and its reads (image and shared-tier entry) done ahead, at 0 ms.
    client.submit(segment(client.upload(png_bytes(scene(640, 480, seed=8802)), "image/png")))
    job_id = client.submit(segment(client.upload(png_bytes(scene(640, 480, seed=8801)), "image/png")))["id"]
    garbage = client.upload(b"not an image at all", "image/png")  # the job behind fails at once, once it runs
    behind = client.submit({"type": "segment", "image": {"upload": garbage["id"]}})["id"]
    wait_until(lambda: any(garbage["id"] in target for _, target in proxy.traffic().requests), "the read ahead", 180)
    time.sleep(0.5)
    proxy.rtt = 8.0  # the first job's PUTs take 4 s to arrive, 8 s to be answered
    assert client.wait(behind, timeout=180, interval=0.05)["error"]["code"] == "unsupported_media_type"
    writing = client.get(job_id)  # the worker is idle now, but for the write behind
    assert (writing["status"], writing["attempts"]) == ("running", 1)

    stack.stop_worker(worker, timeout=60)

    done = client.get(job_id)
    assert (done["status"], done["attempts"]) == ("succeeded", 1), done
    assert sorted(files_of(done)) == ["low_res_logits.npy", "result.json"]
