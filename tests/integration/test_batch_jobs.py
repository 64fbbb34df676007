"""Batch jobs through the whole stack: real Redis, API over HTTP, real worker processes, local storage or moto S3."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import redis
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from samq.client import Client
from samq.embedded import redis_server
from samq.errors import ApiError
from tasks.batch_store import BatchStore
from tests.support.images import png_bytes, scene
from tests.support.results import download, files_of
from tests.support.stack import Stack, s3_storage_env, stack_env

BOX = {"x0": 10, "y0": 8, "x1": 60, "y1": 50}
SIZES = [(96, 64), (128, 96), (80, 80), (160, 72)]


def image(i: int) -> bytes:
    width, height = SIZES[i % len(SIZES)]
    return png_bytes(scene(width, height, seed=i))


def upload_all(client: Client, blobs: list[bytes]) -> list[str]:
    return [client.upload(blob, "image/png")["id"] for blob in blobs]


def segment_batch(inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    template = {"type": "segment", "prompts": [{"box": BOX}], "multimask_output": False}
    return {"type": "batch", "template": template, "inputs": inputs, **extra}


def manifest(client: Client, lines: list[dict[str, Any]]) -> dict[str, str]:
    body = "\n".join(json.dumps(line) for line in lines).encode()
    return {"upload": client.upload(body, "application/x-ndjson")["id"]}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def batch_store(stack: Stack) -> BatchStore:
    return BatchStore(redis.Redis.from_url(stack.env["SAMQ_REDIS_URL"], decode_responses=True), 3600, 3)


def test_200_images_succeed_and_the_coco_export_loads_with_pycocotools(local_stack: Stack, tmp_path: Path) -> None:
    client = local_stack.client
    uploads = upload_all(client, [image(i) for i in range(200)])
    items = [{"upload": u, "name": f"img/{i:03d}.png"} for i, u in enumerate(uploads)]
    job = client.submit(segment_batch({"items": items}, export=["coco"]))
    assert (job["type"], job["model"]) == ("batch", "sam2.1_hiera_tiny")

    done = client.wait(job["id"], timeout=900, interval=0.5)

    assert done["status"] == "succeeded", done["error"]
    summary = done["result"]["summary"]
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (200, 200, 0)
    assert done["progress"] == {"done": 200, "total": 200, "unit": "items"}
    path = tmp_path / "coco.json"
    path.write_bytes(download(files_of(done)["coco.json"]))
    coco = COCO(str(path))
    assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == [item["name"] for item in items]
    assert len(coco.anns) == 200  # one box prompt, best mask only: one instance per image
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["object"]
    for ann in coco.anns.values():
        img = coco.imgs[ann["image_id"]]
        mask = coco.annToMask(ann)
        assert mask.shape == (img["height"], img["width"])
        assert ann["area"] == float(mask.sum())
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and x + w <= img["width"] and y + h <= img["height"]
    index = [json.loads(line) for line in download(files_of(done)["items.jsonl"]).splitlines()]
    assert [line["index"] for line in index] == list(range(200))
    assert {line["status"] for line in index} == {"succeeded"}
    first = client.request("GET", f"/v1/jobs/{job['id']}/result")
    assert (first["succeeded"], first["failures"]) == (200, [])
    item = client.request("GET", f"/v1/jobs/{job['id']}/items/7")
    assert (item["image"]["width"], item["image"]["height"]) == SIZES[7 % len(SIZES)]
    assert len(item["instances"]) == 1


def test_corrupt_items_fail_alone_until_the_failure_rate_is_exceeded(local_stack: Stack) -> None:
    client = local_stack.client
    corrupt = set(range(3, 100, 10))  # 10 of 100
    truncated = image(0)[:60]
    uploads = upload_all(client, [truncated if i in corrupt else image(i) for i in range(100)])
    lines = [{"upload": u, "name": f"{i:03d}.png"} for i, u in enumerate(uploads)]

    lenient = client.submit(segment_batch({"manifest": manifest(client, lines)}, max_failure_rate=0.2))
    strict = client.submit(segment_batch({"manifest": manifest(client, lines)}, max_failure_rate=0.05))
    lenient_done = client.wait(lenient["id"], timeout=900, interval=0.5)
    strict_done = client.wait(strict["id"], timeout=900, interval=0.5)

    assert lenient_done["status"] == "succeeded", lenient_done["error"]
    summary = lenient_done["result"]["summary"]
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (100, 90, 10)
    document = client.request("GET", f"/v1/jobs/{lenient['id']}/result")
    assert sorted(f["index"] for f in document["failures"]) == sorted(corrupt)
    assert {f["name"] for f in document["failures"]} == {f"{i:03d}.png" for i in corrupt}
    assert {f["error"]["code"] for f in document["failures"]} == {"invalid_image"}
    assert document["failure_codes"] == {"invalid_image": 10}
    with pytest.raises(ApiError) as failed_item:
        client.request("GET", f"/v1/jobs/{lenient['id']}/items/3")
    assert (failed_item.value.status, failed_item.value.body["error"]["code"]) == (409, "item_failed")
    with pytest.raises(ApiError) as no_item:
        client.request("GET", f"/v1/jobs/{lenient['id']}/items/100")
    assert (no_item.value.status, no_item.value.body["error"]["code"]) == (404, "item_not_found")

    assert strict_done["status"] == "failed"
    assert strict_done["error"]["code"] == "failure_rate_exceeded"
    assert "max_failure_rate 0.05" in strict_done["error"]["message"]
    partial = strict_done["result"]["summary"]
    assert partial["failed"] == 6  # stopped at the first failure past 5 % of 100
    assert partial["succeeded"] + partial["failed"] + partial["not_run"] == 100


def test_a_bad_manifest_line_fails_the_batch_naming_the_line(local_stack: Stack) -> None:
    client = local_stack.client
    upload = client.upload(image(0), "image/png")["id"]
    lines = [{"upload": upload}, {"upload": upload, "colour": "red"}]
    job = client.submit(segment_batch({"manifest": manifest(client, lines)}))
    done = client.wait(job["id"], timeout=120)
    assert done["status"] == "failed"
    assert done["error"]["code"] == "invalid_manifest"
    assert "line 2" in done["error"]["message"]


def test_listed_items_are_checked_at_submit(local_stack: Stack) -> None:
    client = local_stack.client
    upload = client.upload(image(0), "image/png")["id"]
    # a segment item without prompts segments its most prominent object; a concept item needs a phrase or a box
    no_prompts = {"type": "batch", "template": {"type": "concept"}, "inputs": {"items": [{"upload": upload}]}}
    with pytest.raises(ApiError) as missing:
        client.submit(no_prompts)
    assert missing.value.status == 422
    assert missing.value.body["error"]["details"][0]["field"] == "inputs.items.0.prompts"
    with pytest.raises(ApiError) as unknown:
        client.submit(segment_batch({"items": [{"upload": "upl_doesnotexist"}]}))
    assert unknown.value.body["error"]["details"][0]["field"] == "inputs.items.0.upload"


def test_cancel_stops_new_items_within_seconds(local_stack: Stack) -> None:
    client = local_stack.client
    uploads = upload_all(client, [image(i) for i in range(150)])
    job = client.submit(segment_batch({"items": [{"upload": u} for u in uploads]}))
    wait_until(lambda: client.get(job["id"])["progress"]["done"] >= 5, 300, "the batch to start")
    client.request("POST", f"/v1/jobs/{job['id']}/cancel")
    asked = time.monotonic()
    done = client.wait(job["id"], timeout=60, interval=0.1)
    assert done["status"] == "canceled"
    assert time.monotonic() - asked < 10
    summary = done["result"]["summary"]
    assert summary["not_run"] > 0
    assert summary["succeeded"] + summary["not_run"] == 150


@pytest.fixture
def bulk_stack(tmp_path: Path) -> Iterator[Stack]:
    """API and Redis of its own, no worker yet; local storage."""
    from tests.support.stack import local_storage_env

    with redis_server(tmp_path / "redis", appendonly=False) as redis_url:
        stack = Stack(redis_url, stack_env(redis_url, local_storage_env(tmp_path / "objects")), logs=tmp_path)
        try:
            stack.start_api()
            yield stack
        finally:
            stack.stop()


def test_kill_9_mid_batch_and_a_lost_finalizer_still_finish_with_every_item_once(
    bulk_stack: Stack, tmp_path: Path
) -> None:
    client = bulk_stack.client
    first = bulk_stack.start_worker("bulk,io", {"SAMQ_BATCH_SHARD_SIZE": "4"})
    uploads = upload_all(client, [image(i) for i in range(60)])
    items = [{"upload": u, "name": f"{i:02d}.png"} for i, u in enumerate(uploads)]
    job = client.submit(segment_batch({"items": items}, export=["coco"]))
    job_id = job["id"]
    store = batch_store(bulk_stack)
    final_key = f"samq:batch:{job_id}:final"
    # A finalizer that claimed the batch and died: its claim stays until its lease lapses (below, by hand).
    store._redis.set(final_key, "ghost")

    def mid_shard() -> bool:  # a shard claimed (its lease tells the others when the worker dies), not between two
        state = store.state(job_id)
        return state is not None and state.done >= 12 and state.done % 4 != 0

    wait_until(mid_shard, 300, "a dozen items, in the middle of a shard")
    killed_at = store.expect(job_id).done
    bulk_stack.kill_worker(first)
    assert 0 < killed_at < 60
    bulk_stack.start_worker("bulk,io", {"SAMQ_BATCH_SHARD_SIZE": "4"})

    wait_until(lambda: store.expect(job_id).complete, 600, "every shard to complete")
    time.sleep(3)  # several reconcile passes: nothing finalizes while the dead finalizer's claim is live
    assert client.get(job_id)["status"] == "running"
    store._redis.pexpire(final_key, 1)  # the dead finalizer's lease lapses

    done = client.wait(job_id, timeout=120, interval=0.2)
    assert done["status"] == "succeeded", done["error"]
    assert (done["result"]["summary"]["succeeded"], done["result"]["summary"]["failed"]) == (60, 0)
    path = tmp_path / "coco.json"
    path.write_bytes(download(files_of(done)["coco.json"]))
    coco = COCO(str(path))
    names = [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)]
    assert names == [item["name"] for item in items]  # every item exactly once, in order
    assert sorted(a["image_id"] for a in coco.anns.values()) == sorted(coco.imgs)
    for ann in coco.anns.values():
        img = coco.imgs[ann["image_id"]]
        assert mask_utils.decode(ann["segmentation"]).shape == (img["height"], img["width"])
    assert np.all([len(coco.getAnnIds(imgIds=[i])) == 1 for i in coco.imgs])


def test_an_interactive_job_starts_within_2s_during_a_large_batch(bulk_stack: Stack) -> None:
    client = bulk_stack.client
    bulk_stack.start_worker("interactive")
    bulk_stack.start_worker("bulk,io")
    uploads = upload_all(client, [image(i) for i in range(400)])
    batch = client.submit(segment_batch({"items": [{"upload": u} for u in uploads]}))
    wait_until(lambda: client.get(batch["id"])["progress"]["done"] >= 8, 300, "the batch to be under way")

    segment = client.submit({"type": "segment", "image": {"upload": uploads[0]}, "prompts": [{"box": BOX}]})
    done = client.wait(segment["id"], timeout=60, interval=0.05)

    assert done["status"] == "succeeded", done["error"]
    waited = _seconds(done["started_at"]) - _seconds(done["created_at"])
    assert waited < 2.0, f"the segment job waited {waited:.2f}s behind the batch"
    assert client.get(batch["id"])["status"] == "running"  # it really ran during the batch
    client.request("POST", f"/v1/jobs/{batch['id']}/cancel")


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


MEDIA_BUCKET = "samq-media"


@pytest.fixture
def prefix_stack(tmp_path: Path, s3_endpoint: str) -> Iterator[Stack]:
    """S3 storage, with a media bucket the server may read."""
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=MEDIA_BUCKET)
    for i in range(12):
        client.put_object(Bucket=MEDIA_BUCKET, Key=f"dataset/part{i % 2}/{i:02d}.png", Body=image(i))
    client.put_object(Bucket=MEDIA_BUCKET, Key="dataset/README.txt", Body=b"not an image")
    client.put_object(Bucket=MEDIA_BUCKET, Key="dataset/empty/", Body=b"")
    client.put_object(Bucket=MEDIA_BUCKET, Key="elsewhere/99.png", Body=image(0))
    storage = {**s3_storage_env(s3_endpoint, "samq-test"), "SAMQ_STORAGE_S3_READ_BUCKETS": json.dumps([MEDIA_BUCKET])}
    with redis_server(tmp_path / "redis", appendonly=False) as redis_url:
        stack = Stack(redis_url, stack_env(redis_url, storage), logs=tmp_path)
        try:
            stack.start_api()
            stack.start_worker("bulk,io", {"SAMQ_BATCH_SHARD_SIZE": "5"})
            yield stack
        finally:
            stack.stop()


def test_an_s3_prefix_batch_lists_every_image_under_the_prefix(prefix_stack: Stack) -> None:
    client = prefix_stack.client
    job = client.submit(segment_batch({"s3_prefix": f"s3://{MEDIA_BUCKET}/dataset/"}, export=["coco"]))
    done = client.wait(job["id"], timeout=300, interval=0.2)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["summary"]["succeeded"] == 12
    index = [json.loads(line) for line in download(files_of(done)["items.jsonl"]).splitlines()]
    assert [line["name"] for line in index] == sorted(f"part{i % 2}/{i:02d}.png" for i in range(12))
    with pytest.raises(ApiError) as refused:
        client.submit(segment_batch({"s3_prefix": "s3://samq-test/default/"}))
    assert refused.value.status == 422


def test_a_folder_of_videos_is_tracked_one_item_per_video(local_stack: Stack, tmp_path: Path) -> None:
    from tests.integration.test_track_jobs import HEIGHT, SHAPES, WIDTH
    from tests.support.videos import moving_shapes, write_clip

    client = local_stack.client
    videos = []
    for i, frames in enumerate((12, 9)):
        path = tmp_path / f"clip{i}.mp4"
        write_clip(path, (frame for frame, _ in moving_shapes(frames, WIDTH, HEIGHT, SHAPES)), fps=10)
        videos.append(client.upload(path.read_bytes(), "video/mp4")["id"])
    broken = client.upload(b"\x00\x00\x00\x18ftypmp42 truncated", "video/mp4")["id"]
    seed = {"id": 1, "label": "red box", "frame": 0, "box": {"x0": 8, "y0": 10, "x1": 38, "y1": 34}}
    own = {"id": 5, "frame": 0, "box": {"x0": 78, "y0": 56, "x1": 104, "y1": 82}}
    job = client.submit(
        {
            "type": "batch",
            "template": {"type": "track", "model": "sam2.1_hiera_tiny", "objects": [seed]},
            "inputs": {
                "items": [
                    {"upload": videos[0], "name": "a.mp4"},
                    {"upload": videos[1], "name": "b.mp4", "objects": [own]},
                    {"upload": broken, "name": "broken.mp4"},
                ]
            },
            "max_failure_rate": 0.5,
        }
    )
    done = client.wait(job["id"], timeout=900, interval=0.2)

    assert done["status"] == "succeeded", done["error"]
    summary = done["result"]["summary"]
    assert (summary["succeeded"], summary["failed"], summary["failure_codes"]) == (2, 1, {"invalid_video": 1})
    index = [json.loads(line) for line in download(files_of(done)["items.jsonl"]).splitlines()]
    assert [(line["name"], line["status"]) for line in index] == [
        ("a.mp4", "succeeded"),
        ("b.mp4", "succeeded"),
        ("broken.mp4", "failed"),
    ]
    for line, frames, ids in ((index[0], 12, {1}), (index[1], 9, {5})):
        assert f"items/{line['index']:06d}/tracks.jsonl" in line["files"]
        tracks = local_stack.objects.get(f"default/jobs/{job['id']}/items/{line['index']:06d}/tracks.jsonl")
        rows = [json.loads(row) for row in tracks.splitlines()]
        assert [row["frame"] for row in rows] == list(range(frames))
        assert {obj["id"] for row in rows for obj in row["objects"]} <= ids
