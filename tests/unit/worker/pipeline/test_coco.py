from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pycocotools.coco import COCO

from tasks.specs import ConceptSpec
from worker.encoders import encode_rle
from worker.pipeline.categories import job_categories
from worker.pipeline.coco import CocoStats, CocoWriter

pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]


def _instance(mask: np.ndarray, score: float = 0.9, **fields: Any) -> dict[str, Any]:
    """A result-document instance as ``worker/pipeline/outputs.py`` writes it, with the mask's own bounding box; ``fields``
    adds a concept job's ``label``."""
    rows, cols = np.nonzero(mask)
    x0, y0, x1, y1 = float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)
    instance = {
        "index": 0,
        "score": score,
        "bbox": {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
        "area": int(mask.sum()),
        "rle": encode_rle(mask),
        "prompt_index": 0,
    }
    return instance | fields


def _random_mask(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), dtype=bool)
    top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
    mask[top : top + height // 3, left : left + width // 3] = rng.random((height // 3, width // 3)) > 0.3
    mask[top, left] = True
    return mask


def _pair(mask: np.ndarray, **fields: Any) -> tuple[np.ndarray, dict[str, Any]]:
    return mask, _instance(mask, **fields)


Image = tuple[str, int, int, list[tuple[np.ndarray, dict[str, Any]]]]
"""(file name, width, height, [(mask, instance)])"""


def _images() -> list[Image]:
    """Different sizes, a segment job's image (no labels), two without instances, and concept jobs' with text,
    empty and null labels."""
    m = _random_mask
    return [
        ("a.jpg", 64, 48, [_pair(m(48, 64, 1)), _pair(m(48, 64, 2))]),
        ("empty.jpg", 32, 32, []),
        (
            "b.png",
            40,
            90,
            [
                _pair(m(90, 40, 3), label="cat"),
                _pair(m(90, 40, 4), label=""),
                _pair(m(90, 40, 5), label="dog", prompt_index=2),
            ],
        ),
        ("c.jpg", 17, 23, [_pair(m(23, 17, 6), label="dog"), _pair(m(23, 17, 9), label=None, prompt_index=1)]),
        ("empty-too.jpg", 8, 8, []),
        ("d.jpg", 50, 30, [_pair(m(30, 50, 7), label="bird"), _pair(m(30, 50, 8), label="cat", score=0.5)]),
    ]


def _write(path: Path, images: list[Image]) -> None:
    with CocoWriter(path) as writer:
        for index, (file_name, width, height, pairs) in enumerate(images):
            instances = [instance for _, instance in pairs]
            assert writer.add_image(file_name, width, height, instances) == index + 1


def _temporary_files(directory: Path, name: str) -> list[Path]:
    return [path for path in directory.iterdir() if path.name != name]


def test_written_file_loads_with_pycocotools_and_masks_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    images = _images()
    _write(path, images)

    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4, 5, 6]
    assert [coco.imgs[i]["file_name"] for i in range(1, 7)] == [name for name, *_ in images]
    assert coco.imgs[3] == {"id": 3, "file_name": "b.png", "width": 40, "height": 90}
    assert coco.getAnnIds(imgIds=[2]) == [] and coco.getAnnIds(imgIds=[5]) == []  # zero-instance images are kept
    assert sorted(coco.getAnnIds()) == list(range(1, 10))  # unique, 1..n
    for image_id, (_, width, height, pairs) in enumerate(images, start=1):
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(annotations) == len(pairs)
        for annotation, (mask, instance) in zip(annotations, pairs, strict=True):
            decoded = coco.annToMask(annotation)
            assert decoded.shape == (height, width)
            assert np.array_equal(decoded.astype(bool), mask)
            rows, cols = np.nonzero(mask)
            xywh = [cols.min(), rows.min(), cols.max() + 1 - cols.min(), rows.max() + 1 - rows.min()]
            assert annotation["bbox"] == xywh
            assert annotation["area"] == mask.sum() and isinstance(annotation["area"], float)
            assert annotation["score"] == instance["score"]
            assert annotation["iscrowd"] == 0
            assert annotation["segmentation"] == instance["rle"]


def test_without_a_table_categories_come_in_order_of_first_appearance(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    _write(path, _images())

    coco = COCO(str(path))
    assert coco.loadCats(coco.getCatIds()) == [
        {"id": 1, "name": "object", "supercategory": "object"},
        {"id": 2, "name": "cat", "supercategory": "object"},
        {"id": 3, "name": "dog", "supercategory": "object"},
        {"id": 4, "name": "bird", "supercategory": "object"},
    ]
    names = [coco.cats[coco.anns[i]["category_id"]]["name"] for i in range(1, 10)]
    # no label, "" and None are all "object"
    assert names == ["object", "object", "cat", "object", "dog", "dog", "object", "bird", "cat"]


def test_close_returns_stats_and_removes_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    writer = CocoWriter(path)
    assert len(_temporary_files(tmp_path, path.name)) == 2  # images and annotations, beside the target
    mask = _random_mask(20, 30, 0)
    writer.add_image("x.jpg", 30, 20, [_instance(mask, label="cat"), _instance(mask)])
    writer.add_image("y.jpg", 30, 20, [])
    assert not path.exists()  # nothing at the target until close

    assert writer.close() == CocoStats(images=2, annotations=2, categories=2)
    assert _temporary_files(tmp_path, path.name) == []
    document = json.loads(path.read_text())
    assert list(document) == ["info", "licenses", "images", "annotations", "categories"]
    assert document["licenses"] == []
    with pytest.raises(ValueError, match="closed"):
        writer.add_image("z.jpg", 30, 20, [])
    with pytest.raises(ValueError, match="closed"):
        writer.close()


def test_empty_file_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    with CocoWriter(path):
        pass
    coco = COCO(str(path))
    assert coco.getImgIds() == [] and coco.getAnnIds() == [] and coco.getCatIds() == []


def _fail_while_writing(path: Path) -> None:
    with CocoWriter(path) as writer:
        writer.add_image("x.jpg", 30, 20, [_instance(_random_mask(20, 30, 0))])
        assert len(_temporary_files(path.parent, path.name)) == 2
        raise RuntimeError("boom")


def test_exception_removes_temporary_files_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        _fail_while_writing(tmp_path / "instances.json")
    assert list(tmp_path.iterdir()) == []


def test_instance_without_rle_is_refused_and_nothing_of_the_image_is_written(tmp_path: Path) -> None:
    path = tmp_path / "instances.json"
    mask = _random_mask(20, 30, 0)
    without_rle = {key: value for key, value in _instance(mask).items() if key != "rle"}
    with CocoWriter(path) as writer:
        with pytest.raises(ValueError, match="instance 1 has no rle"):
            writer.add_image("x.jpg", 30, 20, [_instance(mask, label="cat"), without_rle])
        with pytest.raises(ValueError, match="mask is"):
            writer.add_image("x.jpg", 20, 30, [_instance(mask)])  # width and height swapped
        assert writer.add_image("y.jpg", 30, 20, [_instance(mask)]) == 1
    coco = COCO(str(path))
    assert [image["file_name"] for image in coco.dataset["images"]] == ["y.jpg"]
    assert [category["name"] for category in coco.dataset["categories"]] == ["object"]
    assert len(coco.dataset["annotations"]) == 1


def test_a_detectors_class_id_and_confidence_travel_with_the_label(tmp_path: Path) -> None:
    """Segment prompts from another model's boxes: the category keeps the detector's class id, each annotation
    its confidence (beside the mask's own score)."""
    path = tmp_path / "instances.json"
    mask = _random_mask(20, 30, 1)
    instances = [
        _instance(mask, label="car", class_id=2, detection_confidence=0.75),
        _instance(mask, label="person", class_id=0, detection_confidence=0.5),
        _instance(mask, label="car", class_id=2, detection_confidence=0.25),
        _instance(mask),
    ]
    with CocoWriter(path) as writer:
        writer.add_image("street.jpg", 30, 20, instances)

    coco = COCO(str(path))
    assert coco.loadCats(coco.getCatIds()) == [
        {"id": 1, "name": "car", "supercategory": "object", "class_id": 2},
        {"id": 2, "name": "person", "supercategory": "object", "class_id": 0},
        {"id": 3, "name": "object", "supercategory": "object"},
    ]
    annotations = coco.loadAnns(sorted(coco.getAnnIds()))
    assert [a["category_id"] for a in annotations] == [1, 2, 1, 3]
    assert [a.get("detection_confidence") for a in annotations] == [0.75, 0.5, 0.25, None]


def test_the_jobs_table_fixes_the_categories_also_those_nothing_matched(tmp_path: Path) -> None:
    """The category table comes from the prompts: written whole and in order, whatever matched; an instance's
    label picks its category; a label the table lacks is appended."""
    prompts = [{"text": "dog"}, {"text": "cat"}, {"text": "unicorn"}, {"boxes": [{"x0": 1, "y0": 1, "x1": 4, "y1": 4}]}]
    spec = ConceptSpec.model_validate({"type": "concept", "image": {"upload": "upl_x"}, "prompts": prompts})
    table = job_categories(spec)
    path = tmp_path / "instances.json"
    mask = _random_mask(20, 30, 1)
    with CocoWriter(path, table) as writer:
        writer.add_image("a.jpg", 30, 20, [_instance(mask, label="cat"), _instance(mask, label=None)])
        writer.add_image("b.jpg", 30, 20, [_instance(mask, label="dog"), _instance(mask, label="bird")])
        stats = writer.close()

    assert stats == CocoStats(images=2, annotations=4, categories=5)
    coco = COCO(str(path))
    assert [(c["id"], c["name"]) for c in coco.loadCats(coco.getCatIds())] == [
        (1, "dog"),
        (2, "cat"),
        (3, "unicorn"),
        (4, "object"),
        (5, "bird"),
    ]
    assert [coco.anns[i]["category_id"] for i in range(1, 5)] == [2, 4, 1, 5]
    assert len(table) == 4, "the writer appends to its own copy"


def test_two_writers_with_the_same_table_write_the_same_categories(tmp_path: Path) -> None:
    spec = ConceptSpec.model_validate(
        {"type": "concept", "image": {"upload": "upl_x"}, "prompts": [{"text": "dog"}, {"text": "cat"}]}
    )
    mask = _random_mask(20, 30, 1)
    documents = []
    for name, labels in (("first.json", ["cat", "cat"]), ("second.json", [])):
        with CocoWriter(tmp_path / name, job_categories(spec)) as writer:
            writer.add_image("a.jpg", 30, 20, [_instance(mask, label=label) for label in labels])
        documents.append(json.loads((tmp_path / name).read_text()))
    assert (
        documents[0]["categories"]
        == documents[1]["categories"]
        == [
            {"id": 1, "name": "dog", "supercategory": "object"},
            {"id": 2, "name": "cat", "supercategory": "object"},
        ]
    )
