"""Result documents of segment and concept jobs: the category table and each instance's category, annotated.png."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from storage.local import LocalStore
from tasks.jobs import new_job
from tasks.specs import ConceptSpec, SegmentSpec
from tests.support.images import scene
from worker.pipeline.objects import JobObjects
from worker.pipeline.outputs import ANNOTATED_IMAGE, write_concept_result, write_segment_result
from worker.results import InstanceMasks
from worker.runners.concept import ConceptInstances

HEIGHT, WIDTH = 48, 64
BOX = {"x0": 4, "y0": 4, "x1": 30, "y1": 30}


def objects(tmp_path: Path) -> JobObjects:
    return JobObjects(LocalStore(tmp_path, "http://localhost", b"k" * 32))


def concept_spec(prompts: list[dict[str, Any]], **output: Any) -> ConceptSpec:
    body = {"type": "concept", "image": {"upload": "upl_x"}, "prompts": prompts, "output": output}
    return ConceptSpec.model_validate(body)


def found(prompt_index: list[int]) -> ConceptInstances:
    """Instances with a block mask each (shifted per instance), best first."""
    count = len(prompt_index)
    logits = torch.full((count, 8, 8), -10.0)
    for i in range(count):
        logits[i, 1 + i : 4 + i, 1 + i : 5 + i] = 10.0
    boxes = np.array([[8 * (1 + i), 6 * (1 + i), 8 * (5 + i), 6 * (4 + i)] for i in range(count)], dtype=np.float32)
    scores = np.linspace(0.9, 0.6, count, dtype=np.float32)
    return ConceptInstances(logits, scores, boxes, np.array(prompt_index, dtype=np.int64), (HEIGHT, WIDTH), "cpu")


def test_a_concept_result_lists_every_prompts_category_and_each_instances(tmp_path: Path) -> None:
    store = objects(tmp_path)
    spec = concept_spec([{"text": "dog"}, {"text": "cat", "threshold": 1.0}, {"boxes": [BOX]}, {"text": "bird"}])
    job = new_job(spec, "default")
    result = write_concept_result(store, job, spec, found([3, 0, 2, 3]), (HEIGHT, WIDTH), "id", "miss")

    document = json.loads(store.read(job, "result.json"))
    assert document["categories"] == [
        {"id": 1, "name": "dog"},
        {"id": 2, "name": "cat"},  # matched nothing, listed all the same
        {"id": 3, "name": "object"},
        {"id": 4, "name": "bird"},
    ]
    assert [(i["label"], i["category_id"]) for i in document["instances"]] == [
        ("bird", 4),
        ("dog", 1),
        (None, 3),
        ("bird", 4),
    ]
    assert ANNOTATED_IMAGE not in [f.name for f in result.files]


def test_a_segment_result_names_categories_after_labels_and_an_unprompted_job_has_object(tmp_path: Path) -> None:
    store = objects(tmp_path)
    prompts = [{"box": BOX, "label": "car", "class_id": 2}, {"box": BOX}, {"box": BOX, "label": "car"}]
    spec = SegmentSpec.model_validate({"type": "segment", "image": {"upload": "upl_x"}, "prompts": prompts})
    job = new_job(spec, "default")
    write_segment_result(store, job, spec, _masks([0, 1, 2]), (HEIGHT, WIDTH), "id", "miss")
    document = json.loads(store.read(job, "result.json"))
    assert document["categories"] == [{"id": 1, "name": "car", "class_id": 2}, {"id": 2, "name": "object"}]
    assert [i["category_id"] for i in document["instances"]] == [1, 2, 1]

    unprompted = SegmentSpec.model_validate({"type": "segment", "image": {"upload": "upl_x"}})
    job = new_job(unprompted, "default")
    write_segment_result(store, job, unprompted, _masks([0]), (HEIGHT, WIDTH), "id", "miss")
    document = json.loads(store.read(job, "result.json"))
    assert document["categories"] == [{"id": 1, "name": "object"}]
    assert document["instances"][0]["category_id"] == 1


def test_annotated_png_is_written_and_listed_when_an_image_is_given(tmp_path: Path) -> None:
    store = objects(tmp_path)
    image = scene(WIDTH, HEIGHT, seed=1)
    spec = concept_spec([{"text": "dog"}], annotated=True)
    job = new_job(spec, "default")
    instances = found([0, 0])
    result = write_concept_result(store, job, spec, instances, (HEIGHT, WIDTH), "id", "miss", image)

    assert ANNOTATED_IMAGE in [f.name for f in result.files]
    drawn = np.asarray(Image.open(io.BytesIO(store.read(job, ANNOTATED_IMAGE))).convert("RGB"))
    assert drawn.shape == image.shape
    masks = instances.masks
    assert np.all(np.any(drawn != image, axis=2)[masks.any(axis=0)])  # every mask pixel is tinted
    assert np.array_equal(drawn[40:, :6], image[40:, :6])  # far from masks and boxes

    segment = SegmentSpec.model_validate(
        {"type": "segment", "image": {"upload": "upl_x"}, "prompts": [{"box": BOX}], "output": {"annotated": True}}
    )
    job = new_job(segment, "default")
    result = write_segment_result(store, job, segment, _masks([0]), (HEIGHT, WIDTH), "id", "miss", True, image)
    assert ANNOTATED_IMAGE in [f.name for f in result.files]
    assert Image.open(io.BytesIO(store.read(job, ANNOTATED_IMAGE))).size == (WIDTH, HEIGHT)


def _masks(prompt_index: list[int]) -> InstanceMasks:
    count = len(prompt_index)
    masks = np.zeros((count, HEIGHT, WIDTH), dtype=bool)
    for i in range(count):
        masks[i, 5 + i : 20 + i, 5 : 25 + i] = True
    return InstanceMasks.from_masks(
        masks,
        np.full(count, 0.8, dtype=np.float32),
        np.zeros((count, 16, 16), dtype=np.float32),
        np.array(prompt_index, dtype=np.int64),
    )
