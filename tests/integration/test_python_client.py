"""The Python client (``from samq import Client``) against a real stack: every job type end to end, its conversions
equal to pycocotools' decoding of the same results, cancel, listing, downloads, retries and error codes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from samq import ApiError, Client, JobFailed
from tests.support.images import png_bytes, scene
from tests.support.stack import Stack
from tests.support.videos import Shape, moving_shapes, write_clip

BOX = {"x0": 40, "y0": 30, "x1": 200, "y1": 170}


def arr(values: Any) -> np.ndarray:
    """One of an sv.Detections' optional arrays, known to be there."""
    assert values is not None
    return np.asarray(values)


def decoded(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


@pytest.fixture
def client(local_stack: Stack) -> Iterator[Client]:
    with Client(local_stack.api_url, timeout=120) as client:
        yield client


def test_segment_from_a_path_array_or_image_to_detections(client: Client, tmp_path: Path) -> None:
    pixels = scene(seed=31)
    path = tmp_path / "scene.png"
    path.write_bytes(png_bytes(pixels))
    prompts: list[dict[str, Any]] = [
        {"box": BOX, "label": "thing"},
        {"points": [{"x": 250, "y": 60, "positive": True}]},
    ]
    jobs = [client.segment(media, prompts, wait=60) for media in (path, pixels, Image.fromarray(pixels))]
    for job in jobs:
        job.wait(timeout=120)
        assert job.status == "succeeded", job["error"]
    detections = jobs[0].to_detections()
    instances = jobs[0].result()["instances"]
    assert len(detections) == len(instances) == 2
    for i, instance in enumerate(instances):
        assert np.array_equal(arr(detections.mask)[i], decoded(instance["rle"]))
        bbox = instance["bbox"]
        assert detections.xyxy[i].tolist() == [bbox["x0"], bbox["y0"], bbox["x1"], bbox["y1"]]
        assert arr(detections.confidence)[i] == pytest.approx(instance["score"])
    assert list(detections.data["class_name"]) == ["thing", "object"]
    assert arr(detections.class_id).tolist() == [0, 1]
    for other in jobs[1:]:  # the same pixels, sent as an array and as a PIL image: the same masks
        assert np.array_equal(arr(other.to_detections().mask), arr(detections.mask))


def test_everything_to_detections(client: Client) -> None:
    params: dict[str, Any] = {
        "points_per_side": 4,
        "pred_iou_thresh": 0,
        "stability_score_thresh": 0,
        "box_nms_thresh": 1,
        "max_masks": 6,
    }
    job = client.everything(png_bytes(scene(seed=34)), wait=60, **params).wait(timeout=120).raise_for_status()
    detections = job.to_detections()
    instances = job.result()["instances"]
    assert len(detections) == len(instances) == 6
    for i, instance in enumerate(instances):
        assert np.array_equal(arr(detections.mask)[i], decoded(instance["rle"]))
        assert arr(detections.confidence)[i] == pytest.approx(instance["predicted_iou"])
    assert set(detections.data["class_name"]) == {"object"}


def test_embed_then_segment_by_image_id_and_download(client: Client, tmp_path: Path) -> None:
    embedded = client.embed(png_bytes(scene(seed=32)), wait=60).wait(timeout=120).raise_for_status()
    image_id = embedded.summary["image_id"]
    job = client.segment({"image_id": image_id}, [{"box": BOX}], output={"formats": ["rle", "png"]}, wait=60)
    job.wait(timeout=120).raise_for_status()
    assert job.summary["embedding"] != "computed"
    written = job.download(tmp_path / "out")
    assert {p.relative_to(tmp_path / "out").as_posix() for p in written} == set(job.files)
    instance = json.loads((tmp_path / "out/result.json").read_text())["instances"][0]
    png = np.asarray(Image.open(tmp_path / "out" / instance["png"])) > 0
    assert np.array_equal(png, decoded(instance["rle"]))
    assert np.array_equal(arr(job.to_detections().mask)[0], png)


def test_concept_phrases_become_class_names(client: Client) -> None:
    job = client.concept(png_bytes(scene(seed=33)), ["red car", "tree"], threshold=0.0, max_detections=6, wait=60)
    job.wait(timeout=300).raise_for_status()
    detections = job.to_detections()
    instances = job.result()["instances"]
    assert len(detections) == len(instances) > 0
    assert list(detections.data["class_name"]) == [i["label"] for i in instances]
    assert set(detections.data["class_name"]) <= {"red car", "tree"}
    for i, instance in enumerate(instances):
        assert np.array_equal(arr(detections.mask)[i], decoded(instance["rle"]))


def test_track_frames_carry_the_object_ids(client: Client, tmp_path: Path) -> None:
    shapes = [Shape(colour=(220, 40, 40), size=(30, 24), start=(8, 10), velocity=(2.0, 1.0), label="red box")]
    write_clip(tmp_path / "clip.mp4", (frame for frame, _ in moving_shapes(8, 128, 96, shapes)), fps=10)
    seed = {"id": 7, "label": "red box", "frame": 0, "box": {"x0": 6, "y0": 8, "x1": 40, "y1": 36}}
    job = client.track(tmp_path / "clip.mp4", [seed], model="sam2.1_hiera_tiny").wait(timeout=300)
    job.raise_for_status()
    lines = list(job.tracks())
    frames = dict(job.frames())
    assert sorted(frames) == [line["frame"] for line in lines]
    for line in lines:
        detections = frames[line["frame"]]
        assert arr(detections.tracker_id).tolist() == [o["id"] for o in line["objects"]]
        for i, obj in enumerate(line["objects"]):
            assert np.array_equal(arr(detections.mask)[i], decoded(obj["mask"]))
    assert any(len(frames[f]) for f in frames) and {7} >= {t for f in frames for t in arr(frames[f].tracker_id)}


def test_a_batch_of_files_gives_coco_detections_and_a_dataset(client: Client, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"img{i}.png")
        paths[-1].write_bytes(png_bytes(scene(seed=40 + i)))
    template = {"type": "segment", "prompts": [{"box": BOX, "label": "thing"}]}
    job = client.batch(template, paths, export=["coco"]).wait(timeout=300).raise_for_status()
    coco_path = job.download(tmp_path / "out", ["coco.json"])[0]
    coco = COCO(str(coco_path))
    by_file = job.item_detections()
    assert sorted(by_file) == ["img0.png", "img1.png", "img2.png"]
    for image in coco.dataset["images"]:
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        detections = by_file[image["file_name"]]
        assert len(detections) == len(annotations) == 1
        assert np.array_equal(arr(detections.mask)[0], coco.annToMask(annotations[0]).astype(bool))
        assert list(detections.data["class_name"]) == ["thing"]
    dataset = job.to_dataset(tmp_path)
    assert len(dataset) == 3 and dataset.classes == ["thing"]


def test_cancel_list_and_errors_carry_the_api_code(client: Client) -> None:
    done = client.segment(png_bytes(scene(seed=34)), [{"box": BOX}], wait=60).wait(timeout=120)
    with pytest.raises(ApiError) as caught:
        done.cancel()
    assert (caught.value.status, caught.value.code) == (409, "job_not_cancelable")
    with pytest.raises(ApiError) as unknown:
        client.segment("upl_doesnotexist", [{"box": BOX}])
    assert (unknown.value.status, unknown.value.code) == (422, "unknown_upload")
    failed = client.segment(png_bytes(scene(seed=35))[:300], [{"box": BOX}], wait=60).wait(timeout=120)
    with pytest.raises(JobFailed) as job_failed:
        failed.to_detections()
    assert job_failed.value.code == failed["error"]["code"] == "invalid_image"
    listed = [job.id for job in client.list_jobs(type="segment", limit=150, page_size=7)]
    assert done.id in listed and failed.id in listed and len(listed) == len(set(listed))
    assert listed.index(failed.id) < listed.index(done.id)  # newest first


def test_429_is_retried_after_retry_after_until_it_passes(rate_limited_stack: Stack) -> None:
    impatient = Client(rate_limited_stack.api_url, max_retries=0)
    impatient.request("GET", "/v1/jobs")
    impatient.request("GET", "/v1/jobs")  # the burst of 2 spent
    with pytest.raises(ApiError) as caught:
        impatient.request("GET", "/v1/jobs")
    assert (caught.value.status, caught.value.code) == (429, "rate_limited") and caught.value.retry_after
    started = time.monotonic()
    patient = Client(rate_limited_stack.api_url)
    for _ in range(4):
        assert patient.request("GET", "/v1/jobs")["data"] == []
    assert time.monotonic() - started >= 2  # refilled at 1 a second, not answered at once
