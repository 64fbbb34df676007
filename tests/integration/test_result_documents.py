"""Every result document, JSONL line and summary a worker writes, read through the API and the files' URLs, is exactly
what tasks.documents describes (and so what /openapi.json says): a field the worker adds, drops or renames without a
change to the models fails here.

Each document is validated by its model (``extra="forbid"``) and must dump back to the very JSON that was served, so
that no field was coerced or defaulted on the way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel, TypeAdapter

from samq.client import Client
from samq.errors import ApiError
from tasks.documents import (
    BatchItemLine,
    BatchItemSucceeded,
    BatchJobSummary,
    BatchResult,
    ConceptJobSummary,
    ConceptResult,
    EmbedJobSummary,
    EmbedResult,
    EverythingJobSummary,
    EverythingResult,
    EverythingTimings,
    ItemDocument,
    SegmentJobSummary,
    SegmentResult,
    TrackFrame,
    TrackJobSummary,
    TrackSummary,
)
from tests.integration.test_track_jobs import clip, finish, track, upload
from tests.support.images import b64, png_bytes, scene
from tests.support.results import files_of
from tests.support.stack import Stack
from tests.support.videos import detections_jsonl

M = TypeVar("M", bound=BaseModel)
BOX = {"x0": 10, "y0": 8, "x1": 60, "y1": 50}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LINES: TypeAdapter[Any] = TypeAdapter(BatchItemLine)
ITEMS: TypeAdapter[Any] = TypeAdapter(ItemDocument)


def typed(model: type[M], raw: Any) -> M:
    """``raw`` validated by ``model``, which must describe all of it: the fields set dump back to ``raw``."""
    document = model.model_validate(raw)
    assert document.model_dump(mode="json", exclude_unset=True) == raw
    return document


def typed_union(adapter: TypeAdapter[Any], raw: Any) -> Any:
    document = adapter.validate_python(raw)
    assert adapter.dump_python(document, mode="json", exclude_unset=True) == raw
    return document


def served(client: Client, job: dict[str, Any]) -> Any:
    """The job's result document from GET /v1/jobs/{id}/result, checked against the file at ``result.url``."""
    document = client.result(job["id"])
    assert json.loads(client.fetch(job["result"]["url"])) == document
    return document


def jsonl(client: Client, url: str) -> list[Any]:
    return [json.loads(line) for line in client.fetch(url).splitlines()]


def test_a_segment_job_with_every_format_and_labels(local_stack: Stack) -> None:
    client = local_stack.client
    prompts: list[dict[str, Any]] = [
        {"box": BOX, "label": "car", "class_id": 2, "detection_confidence": 0.75},
        {"points": [{"x": 120, "y": 118}], "label": "car", "class_id": 2},
        {"points": [{"x": 250, "y": 60}]},  # no label: category "object"
    ]
    body = {
        "type": "segment",
        "image": {"base64": b64(png_bytes(scene()))},
        "prompts": prompts,
        "output": {"formats": ["rle", "polygon", "png"], "annotated": True},
    }
    done = client.submit(body, wait=120)
    assert done["status"] == "succeeded", done["error"]

    summary = typed(SegmentJobSummary, done["result"]["summary"])
    assert summary.instances == 3 and summary.instances_per_label == {"car": 2}
    document = typed(SegmentResult, served(client, done))
    assert [c.model_dump(exclude_unset=True) for c in document.categories] == [
        {"id": 1, "name": "car", "class_id": 2},
        {"id": 2, "name": "object"},
    ]
    first, second, third = document.instances
    assert (first.label, first.class_id, first.detection_confidence, first.category_id) == ("car", 2, 0.75, 1)
    assert (second.label, second.class_id, second.detection_confidence) == ("car", 2, None)
    assert (third.label, third.class_id, third.category_id) == (None, None, 2)
    files = files_of(done)
    for instance in document.instances:
        assert instance.rle is not None and instance.polygon is not None and instance.png is not None
        assert client.fetch(files[instance.png]).startswith(PNG_SIGNATURE)
    assert client.fetch(files["annotated.png"]).startswith(PNG_SIGNATURE)


def test_a_concept_job_with_a_phrase_and_an_exemplar(local_stack: Stack) -> None:
    client = local_stack.client
    body = {
        "type": "concept",
        "model": "sam3",
        "image": {"base64": b64(png_bytes(scene()))},
        "prompts": [{"text": "red car"}, {"boxes": [BOX]}],
        "threshold": 0.0,
        "output": {"formats": ["rle", "polygon"]},
    }
    done = client.submit(body, wait=120)
    assert done["status"] == "succeeded", done["error"]

    summary = typed(ConceptJobSummary, done["result"]["summary"])
    document = typed(ConceptResult, served(client, done))
    assert [c.model_dump(exclude_unset=True) for c in document.categories] == [
        {"id": 1, "name": "red car"},
        {"id": 2, "name": "object"},
    ]
    assert len(document.instances) == summary.instances == sum(summary.instances_per_prompt) > 0
    labels = {"red car": 1, None: 2}  # the exemplar-only prompt's instances: label null, category "object"
    for instance in document.instances:
        assert instance.category_id == labels[instance.label]
        assert instance.rle is not None and instance.polygon is not None and instance.png is None


def test_an_everything_job_alone_and_as_a_batch_item(local_stack: Stack) -> None:
    client = local_stack.client
    params = {"points_per_side": 4, "pred_iou_thresh": 0, "stability_score_thresh": 0, "box_nms_thresh": 1}
    upload_id = client.upload(png_bytes(scene(seed=62)), "image/png")["id"]
    body = {"type": "everything", "image": {"upload": upload_id}, **params, "max_masks": 4}
    done = client.submit(body | {"output": {"formats": ["rle", "polygon", "png"], "annotated": True}}, wait=120)
    assert done["status"] == "succeeded", done["error"]
    summary = typed(EverythingJobSummary, done["result"]["summary"])
    document = typed(EverythingResult, served(client, done))
    assert len(document.instances) == summary.instances == 4 and summary.candidates_upsampled >= 4
    assert [c.model_dump(exclude_unset=True) for c in document.categories] == [{"id": 1, "name": "object"}]
    for instance in document.instances:
        assert instance.score == instance.predicted_iou and len(instance.point_coords) == 1
        assert instance.rle is not None and instance.polygon is not None and instance.png is not None

    template = {"type": "everything", **params, "max_masks": 2}
    job = client.submit({"type": "batch", "template": template, "inputs": {"items": [{"upload": upload_id}]}})
    batch = client.wait(job["id"], timeout=300, interval=0.2)
    assert batch["status"] == "succeeded", batch["error"]
    (line,) = [typed_union(LINES, line) for line in jsonl(client, files_of(batch)["items.jsonl"])]
    assert isinstance(line, BatchItemSucceeded) and isinstance(line.timings, EverythingTimings)
    item = typed_union(ITEMS, client.request("GET", f"/v1/jobs/{batch['id']}/items/0"))
    assert isinstance(item, EverythingResult) and len(item.instances) == 2


def test_an_embed_job(local_stack: Stack) -> None:
    client = local_stack.client
    done = client.submit({"type": "embed", "image": {"base64": b64(png_bytes(scene(seed=61)))}}, wait=120)
    assert done["status"] == "succeeded", done["error"]
    summary = typed(EmbedJobSummary, done["result"]["summary"])
    document = typed(EmbedResult, served(client, done))
    assert document.image.image_id == summary.image_id and document.model.value == done["model"]


def test_a_track_job_reseeded_from_detections_with_polygons(local_stack: Stack, tmp_path: Path) -> None:
    client = local_stack.client
    path, truth = clip(tmp_path / "shapes.mp4", 12)
    detections = {"upload": client.upload(detections_jsonl(truth, every_n=3).encode(), "application/jsonl")["id"]}
    body = track(
        upload(client, path),
        prompt_mode="every_n_frames",
        every_n=3,
        detections=detections,
        output={"formats": ["rle", "polygon"]},
    )
    done = finish(client, client.submit(body)["id"])
    assert done["status"] == "succeeded", done["error"]

    summary = typed(TrackJobSummary, done["result"]["summary"])
    document = typed(TrackSummary, served(client, done))  # a track job's result document is its summary.json
    assert (document.frames, document.objects_tracked, document.partial) == (12, summary.objects_tracked, False)
    assert all(o.detection_score is not None for o in document.objects)
    frames = [typed(TrackFrame, line) for line in jsonl(client, files_of(done)["tracks.jsonl"])]
    assert [f.frame for f in frames] == list(range(12))
    seen = [o for f in frames for o in f.objects]
    assert seen and all(o.polygon is not None and o.detection_score is not None for o in seen)


def test_a_batch_with_a_failing_item_and_a_batch_it_stops(local_stack: Stack) -> None:
    client = local_stack.client
    good = [client.upload(png_bytes(scene(96, 80, seed=i)), "image/png")["id"] for i in range(2)]
    corrupt = client.upload(png_bytes(scene(96, 80))[:60], "image/png")["id"]
    template: dict[str, Any] = {
        "type": "segment",
        "prompts": [{"box": BOX, "label": "car", "class_id": 1}],
        "output": {"formats": ["rle", "png"]},
    }
    items = [{"upload": good[0], "name": "a.png"}, {"upload": corrupt, "name": "bad.png"}, {"upload": good[1]}]
    lenient = client.submit(
        {"type": "batch", "template": template, "inputs": {"items": items}, "max_failure_rate": 0.5, "export": ["coco"]}
    )
    stopped = client.submit(
        {"type": "batch", "template": template, "inputs": {"items": items[1:]}, "max_failure_rate": 0.0}
    )

    done = client.wait(lenient["id"], timeout=300, interval=0.2)
    assert done["status"] == "succeeded", done["error"]
    summary = typed(BatchJobSummary, done["result"]["summary"])
    document = typed(BatchResult, served(client, done))
    counts = (document.succeeded, document.failed, document.not_run)
    assert counts == (summary.succeeded, summary.failed, summary.not_run) == (2, 1, 0)
    assert document.exports.coco == "coco.json" and document.items == "items.jsonl"
    assert [(f.index, f.name, f.error.code) for f in document.failures] == [(1, "bad.png", "invalid_image")]
    lines = [typed_union(LINES, line) for line in jsonl(client, files_of(done)[document.items])]
    assert [line.status for line in lines] == ["succeeded", "failed", "succeeded"]
    for line in lines:
        if not isinstance(line, BatchItemSucceeded):
            with pytest.raises(ApiError) as failed:
                client.request("GET", f"/v1/jobs/{done['id']}/items/{line.index}")
            assert failed.value.body["error"]["code"] == "item_failed"
            continue
        item = typed_union(ITEMS, client.request("GET", f"/v1/jobs/{done['id']}/items/{line.index}"))
        assert isinstance(item, SegmentResult) and line.document in line.files
        assert [(i.label, i.class_id, i.png) for i in item.instances] == [("car", 1, "masks/0.png")]

    ended = client.wait(stopped["id"], timeout=300, interval=0.2)
    assert (ended["status"], ended["error"]["code"]) == ("failed", "failure_rate_exceeded")
    document = typed(BatchResult, served(client, ended))  # a stopped batch keeps its result
    typed(BatchJobSummary, ended["result"]["summary"])
    lines = [typed_union(LINES, line) for line in jsonl(client, files_of(ended)[document.items])]
    assert [line.status for line in lines] == ["failed", "not_run"]
    assert (document.failed, document.not_run, document.exports.coco) == (1, 1, None)


def test_a_track_batch_item_answers_its_summary(local_stack: Stack, tmp_path: Path) -> None:
    client = local_stack.client
    path, _ = clip(tmp_path / "item.mp4", 6)
    seed = {"id": 1, "label": "red box", "frame": 0, "box": {"x0": 8, "y0": 10, "x1": 38, "y1": 34}}
    template = {"type": "track", "model": "sam2.1_hiera_tiny", "objects": [seed]}
    job = client.submit({"type": "batch", "template": template, "inputs": {"items": [upload(client, path)]}})
    done = client.wait(job["id"], timeout=300, interval=0.2)
    assert done["status"] == "succeeded", done["error"]

    typed(BatchJobSummary, done["result"]["summary"])
    document = typed(BatchResult, served(client, done))
    (line,) = [typed_union(LINES, line) for line in jsonl(client, files_of(done)[document.items])]
    assert isinstance(line, BatchItemSucceeded) and line.timings is None  # only image items have timings
    item = typed_union(ITEMS, client.request("GET", f"/v1/jobs/{done['id']}/items/0"))
    assert isinstance(item, TrackSummary) and (item.frames, item.objects[0].label) == (6, "red box")
