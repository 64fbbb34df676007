"""Track jobs through the real stack: HTTP → Redis → a real worker process → local or S3 storage.

Exactness against the streaming runner (itself bit-identical to Meta's predictor, see tests/unit/test_sam2_video.py),
stable ids under re-seeding, cancel mid-video, kill -9 mid-video with resume, and bad input.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from samq.client import Client
from samq.errors import ApiError
from storage import keys
from tests.support.stack import TEST_IMAGE_SIZE, Stack
from tests.support.videos import (
    Shape,
    detections_jsonl,
    jpeg_as_mp4,
    moving_shapes,
    ten_hour_video,
    truncated_copy,
    write_clip,
    zero_frame_video,
)
from worker.encoders import decode_rle
from worker.settings import WorkerSettings

WIDTH, HEIGHT = 128, 96
SHAPES = [
    Shape(colour=(220, 40, 40), size=(30, 24), start=(8, 10), velocity=(2.0, 1.0), label="red box"),
    Shape(colour=(40, 200, 60), size=(26, 26), start=(90, 60), velocity=(-1.5, -0.5), kind="ellipse", label="disc"),
    Shape(colour=(40, 80, 230), size=(20, 20), start=(60, 8), velocity=(0.0, 1.5), first_frame=12, label="late"),
]


def clip(path: Path, frames: int, shapes: list[Shape] = SHAPES) -> tuple[Path, list[Any]]:
    drawn = list(moving_shapes(frames, WIDTH, HEIGHT, shapes))
    write_clip(path, (frame for frame, _ in drawn), fps=10)
    return path, [boxes for _, boxes in drawn]


def upload(client: Client, path: Path, content_type: str = "video/mp4") -> dict[str, str]:
    return {"upload": client.upload(path.read_bytes(), content_type)["id"]}


def box(x0: float, y0: float, x1: float, y1: float) -> dict[str, float]:
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1}


def track(video: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"type": "track", "model": "sam2.1_hiera_tiny", "video": video, **fields}


TWO_OBJECTS = [
    {"id": 1, "label": "red box", "frame": 0, "box": box(8, 10, 38, 34)},
    {"id": 7, "frame": 8, "box": box(78, 56, 104, 82), "points": [{"x": 91, "y": 69}]},
]


def lines(stack: Stack, job: dict[str, Any]) -> list[dict[str, Any]]:
    data = stack.objects.get(keys.job_file("default", job["id"], "tracks.jsonl"))
    return [json.loads(line) for line in data.splitlines()]


def finish(client: Client, job_id: str, timeout: float = 600) -> dict[str, Any]:
    done = client.wait(job_id, timeout=timeout, interval=0.1)
    assert done["status"] in ("succeeded", "failed", "canceled"), done
    return done


def wait_frames(client: Client, job_id: str, frames: int, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(job_id)
        assert job["status"] in ("queued", "running"), job
        if job["progress"]["unit"] == "frames" and job["progress"]["done"] >= frames:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {frames} frames")


def test_a_track_job_streams_the_same_masks_as_the_runner_and_renders_a_preview(
    s3_stack: Stack, tmp_path: Path
) -> None:
    from worker.runners.sam2_video import Sam2VideoRunner
    from worker.runners.video import Seed
    from worker.video import VideoFrames
    from worker.video_probe import probe, select_frames

    path, _ = clip(tmp_path / "clip.mp4", 24)
    job = track(upload(s3_stack.client, path), objects=TWO_OBJECTS, output={"preview": True})
    done = finish(s3_stack.client, s3_stack.client.submit(job)["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == {"done": 24, "total": 24, "unit": "frames"}
    assert {f["name"] for f in done["result"]["files"]} == {"tracks.jsonl", "summary.json", "preview.mp4"}
    got = lines(s3_stack, done)
    assert [line["frame"] for line in got] == list(range(24))
    assert [line["time"] for line in got] == [round(i / 10, 6) for i in range(24)]

    info = probe(path, max_seconds=60, max_pixels=10**6, max_frames=100)
    settings = WorkerSettings(random_weights=True, image_size=TEST_IMAGE_SIZE, device="cpu", allow_download=False)
    with VideoFrames(path, info, select_frames(info, start=0, end=None, stride=1, max_fps=None)) as frames:
        session = Sam2VideoRunner.load("sam2.1_hiera_tiny", settings).open(frames)
        session.add(0, [Seed(obj_id=1, box=np.array([8, 10, 38, 34], np.float32))])
        points = np.array([[91, 69]], np.float32)
        seed = Seed(
            obj_id=7,
            box=np.array([78, 56, 104, 82], np.float32),
            point_coords=points,
            point_labels=np.array([1], np.int32),
        )
        session.add(8, [seed])
        expected = list(session.propagate(0, 23))
    for line, tracks in zip(got, expected, strict=True):
        present = {o["id"]: o for o in line["objects"]}
        for i, obj_id in enumerate(tracks.obj_ids):
            mask = tracks.masks[i]
            assert (obj_id in present) == bool(mask.any()), f"frame {line['frame']}: object {obj_id}"
            if obj_id in present:
                assert np.array_equal(decode_rle(present[obj_id]["mask"]), mask)
                assert present[obj_id]["score"] == round(float(tracks.scores[i]), 6)
    assert all(o["label"] == "red box" for line in got for o in line["objects"] if o["id"] == 1)

    summary = s3_stack.client.result(done["id"])
    assert summary["frames"] == 24 and summary["partial"] is False and summary["video"]["frames"] == 24
    assert {o["id"] for o in summary["objects"]} == {1, 7}
    preview = s3_stack.objects.get(keys.job_file("default", done["id"], "preview.mp4"))
    (tmp_path / "preview.mp4").write_bytes(preview)
    with av.open(str(tmp_path / "preview.mp4")) as container:
        decoded = [f for f in container.decode(video=0)]
    assert len(decoded) == 24 and (decoded[0].width, decoded[0].height) == (WIDTH, HEIGHT)


def test_reseeding_from_detections_keeps_ids_and_a_new_shape_gets_a_new_id(local_stack: Stack, tmp_path: Path) -> None:
    path, truth = clip(tmp_path / "shapes.mkv", 30)
    detections = detections_jsonl(truth, every_n=3, jitter=0.02)
    scores = {"red box": 0.9, "disc": 0.8, "late": 0.7}
    detections = "".join(
        json.dumps({**row, "boxes": [{**b, "score": scores[b["label"]]} for b in row["boxes"]]}) + "\n"
        for row in map(json.loads, detections.splitlines())
    )
    client = local_stack.client
    det = {"upload": client.upload(detections.encode(), "application/jsonl")["id"]}
    job = track(upload(client, path, "video/x-matroska"), prompt_mode="every_n_frames", every_n=3, detections=det)
    done = finish(client, client.submit(job)["id"])
    assert done["status"] == "succeeded", done["error"]

    objects = {o["id"]: o for o in client.result(done["id"])["objects"]}
    assert {o["label"] for o in objects.values()} == {"red box", "disc", "late"}
    assert len(objects) == 3, f"a re-seed started a new id for a known shape: {objects}"
    by_label = {o["label"]: obj_id for obj_id, o in objects.items()}
    assert by_label["late"] == max(objects), "the shape that appears mid-clip gets a new id"
    assert {o["label"]: o["detection_score"] for o in objects.values()} == scores
    for line in lines(local_stack, done):
        for o in line["objects"]:
            assert o["label"] == objects[o["id"]]["label"], f"frame {line['frame']}: id {o['id']} changed label"
            assert o["id"] != by_label["late"] or line["frame"] >= 12


def test_cancel_mid_video_keeps_the_frames_done(local_stack: Stack, tmp_path: Path) -> None:
    path, _ = clip(tmp_path / "long.mp4", 300)
    client = local_stack.client
    job_id = client.submit(track(upload(client, path), objects=TWO_OBJECTS[:1]))["id"]
    wait_frames(client, job_id, 12)
    asked = time.monotonic()
    client.request("POST", f"/v1/jobs/{job_id}/cancel")
    done = finish(client, job_id, timeout=30)
    took = time.monotonic() - asked

    assert done["status"] == "canceled"
    assert took < 5, f"cancel took {took:.1f}s"
    summary = done["result"]["summary"]
    assert summary["partial"] is True and 12 <= summary["frames"] < 300
    assert [line["frame"] for line in lines(local_stack, done)] == list(range(summary["frames"]))
    assert client.result(job_id)["frames"] == summary["frames"]


def test_kill_9_mid_video_resumes_from_the_last_chunk(bare_stack: Stack, tmp_path: Path) -> None:
    path, _ = clip(tmp_path / "resume.mp4", 64)
    client = bare_stack.client
    worker = bare_stack.start_worker("video")
    job = track(upload(client, path), objects=TWO_OBJECTS)
    job_id = client.submit(job)["id"]
    wait_frames(client, job_id, 20)  # at least two 8-frame chunks are stored
    bare_stack.kill_worker(worker)
    bare_stack.start_worker("video")
    done = finish(client, job_id)

    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    summary = client.result(job_id)
    assert summary["resumed_from"] >= 16, "the second attempt starts after the stored chunks, not at frame 0"
    resumed = lines(bare_stack, done)
    assert [line["frame"] for line in resumed] == list(range(64))

    again = finish(client, client.submit(job)["id"])  # the same job, never interrupted
    assert lines(bare_stack, again) == resumed, "resuming from the stored tracker state changes nothing"
    assert not list(Path(bare_stack.env["SAMQ_STORAGE_DIR"]).rglob("parts"))


@pytest.mark.parametrize(
    "fields",
    [
        {"model": "sam3", "concepts": ["red box", "disc"]},
        {"model": "sam3_tracker", "objects": TWO_OBJECTS},
    ],
    ids=["sam3-concepts", "sam3-tracker"],
)
def test_sam3_track_jobs_run_through_the_stack(local_stack: Stack, tmp_path: Path, fields: dict[str, Any]) -> None:
    """The SAM3 video runners (exact against transformers in tests/unit/test_sam3_video.py) behind the same pipeline:
    every processed frame once, labels from the concepts or the seeds."""
    client = local_stack.client
    path, _ = clip(tmp_path / "sam3.webm", 10)
    done = finish(client, client.submit(track(upload(client, path, "video/webm"), **fields))["id"])
    assert done["status"] == "succeeded", done["error"]
    assert [line["frame"] for line in lines(local_stack, done)] == list(range(10))
    labels = {o["label"] for o in client.result(done["id"])["objects"]}
    assert labels <= {"red box", "disc", None}


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda d: truncated_copy(clip(d / "full.mp4", 20)[0], d / "cut.mp4", 0.5), "invalid_video"),
        (lambda d: jpeg_as_mp4(d / "photo.mp4"), "invalid_video"),
        (lambda d: zero_frame_video(d / "empty.mp4"), "empty_video"),
        (lambda d: ten_hour_video(d / "ten-hours.mp4"), "video_too_long"),
    ],
    ids=["truncated", "jpeg-as-mp4", "zero-frames", "ten-hours"],
)
def test_bad_videos_fail_with_a_precise_code(local_stack: Stack, tmp_path: Path, make: Any, code: str) -> None:
    client = local_stack.client
    job = track(upload(client, make(tmp_path)), objects=[{"id": 1, "box": box(0, 0, 10, 10)}])
    done = finish(client, client.submit(job)["id"])
    assert (done["status"], done["error"]["code"]) == ("failed", code), done["error"]


def test_bad_seeds_fail_and_the_worker_stays_healthy(local_stack: Stack, tmp_path: Path) -> None:
    client = local_stack.client
    video = upload(client, clip(tmp_path / "short.mp4", 10)[0])
    outside = finish(client, client.submit(track(video, objects=[{"id": 1, "box": box(200, 10, 240, 40)}]))["id"])
    assert (outside["status"], outside["error"]["code"]) == ("failed", "prompt_out_of_bounds")
    late = finish(client, client.submit(track(video, objects=[{"id": 1, "frame": 50, "box": box(1, 1, 9, 9)}]))["id"])
    assert (late["status"], late["error"]["code"]) == ("failed", "seed_frame_out_of_range")
    assert "past the video's last frame (9)" in late["error"]["message"]
    healthy = finish(client, client.submit(track(video, objects=TWO_OBJECTS[:1], frames={"end": 3}))["id"])
    assert healthy["status"] == "succeeded" and healthy["result"]["summary"]["frames"] == 4


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({}, "objects: give at least one object"),
        ({"objects": [{"id": 1, "frame": 3, "box": box(1, 1, 9, 9)}], "frames": {"stride": 2}}, "objects[0].frame 3"),
        ({"model": "sam3", "objects": [{"id": 1, "box": box(1, 1, 9, 9)}]}, "give concepts"),
        ({"objects": [{"id": 1}]}, "an object needs a box, points, or both"),
        ({"objects": [{"id": 1, "box": box(1, 1, 9, 9)}], "prompt_mode": "every_frame"}, "give detections"),
        ({"objects": [{"id": 1, "box": box(1, 1, 9, 9)}, {"id": 1, "box": box(1, 1, 9, 9)}]}, "ids must be unique"),
    ],
    ids=["no-objects", "seed-skipped", "sam3-no-concepts", "no-geometry", "no-detections", "duplicate-ids"],
)
def test_invalid_track_specs_are_422(local_stack: Stack, fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ApiError) as caught:
        local_stack.client.submit(track({"upload": "upl_missing"}, **fields))
    assert caught.value.status == 422
    assert any(says in d["message"] for d in caught.value.body["error"]["details"]), caught.value.body
