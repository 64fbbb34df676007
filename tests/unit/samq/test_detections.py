"""samq result documents as sv.Detections: masks from each encoding, boxes, scores, classes, track ids, COCO."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from samq.detections import from_coco, from_result, track_frames
from worker.encoders import encode_png, encode_polygons, encode_rle


def arr(values: Any) -> np.ndarray:
    """One of an sv.Detections' optional arrays, known to be there."""
    assert values is not None
    return np.asarray(values)


def masks() -> np.ndarray:
    found = np.zeros((3, 40, 50), dtype=bool)
    found[0, 5:20, 10:30] = True
    found[0, 9:13, 15:20] = False  # a hole
    found[1, 25:38, 2:12] = True
    found[2, 1:4, 40:49] = True
    return found


def instance(i: int, pixels: np.ndarray, **fields) -> dict:
    ys, xs = np.nonzero(pixels)
    bbox = {"x0": float(xs.min()), "y0": float(ys.min()), "x1": float(xs.max() + 1), "y1": float(ys.max() + 1)}
    return {"index": i, "score": 0.5 + i / 10, "bbox": bbox, "area": int(pixels.sum()), **fields}


@pytest.mark.parametrize("encoding", ["rle", "polygon", "png"])
def test_every_mask_encoding_decodes_to_the_same_masks(encoding: str) -> None:
    found = masks()
    files = {f"masks/{i}.png": encode_png(m) for i, m in enumerate(found)}
    encoded = {"rle": encode_rle, "polygon": encode_polygons, "png": lambda m: None}
    instances = []
    for i, mask in enumerate(found):
        value = f"masks/{i}.png" if encoding == "png" else encoded[encoding](mask)
        instances.append(instance(i, mask, **{encoding: value}, label="car" if i != 1 else "dog", prompt_index=i))
    document = {"image": {"width": 50, "height": 40}, "instances": instances}
    detections = from_result(document, files.__getitem__)
    assert np.array_equal(arr(detections.mask), found)
    assert detections.xyxy.tolist() == [[10, 5, 30, 20], [2, 25, 12, 38], [40, 1, 49, 4]]
    assert arr(detections.confidence).tolist() == pytest.approx([0.5, 0.6, 0.7])
    assert arr(detections.class_id).tolist() == [0, 1, 0]  # labels numbered by first appearance
    assert list(detections.data["class_name"]) == ["car", "dog", "car"]
    assert list(detections.data["prompt_index"]) == [0, 1, 2]


def test_class_ids_follow_the_documents_category_table() -> None:
    found = masks()
    categories = [{"id": 1, "name": "truck"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "car"}]
    instances = [
        instance(i, m, rle=encode_rle(m), label=name, category_id=cid)
        for i, (m, name, cid) in enumerate(zip(found, ["car", "dog", "car"], [3, 2, 3], strict=True))
    ]
    document = {"image": {"width": 50, "height": 40}, "instances": instances, "categories": categories}
    detections = from_result(document, lambda name: b"")
    assert arr(detections.class_id).tolist() == [2, 1, 2]
    assert list(detections.data["class_name"]) == ["car", "dog", "car"]


def test_an_empty_result_is_empty_detections_of_the_image_size() -> None:
    detections = from_result({"image": {"width": 50, "height": 40}, "instances": []}, lambda name: b"")
    assert len(detections) == 0 and arr(detections.mask).shape == (0, 40, 50) and detections.xyxy.shape == (0, 4)


def test_a_mask_without_encoding_is_a_clear_error() -> None:
    document = {"image": {"width": 50, "height": 40}, "instances": [instance(0, masks()[0])]}
    with pytest.raises(ValueError, match="output formats"):
        from_result(document, lambda name: b"")


def test_track_lines_become_frames_with_tracker_ids() -> None:
    found = masks()
    lines = [
        {"frame": 0, "time": 0.0, "objects": [instance(0, found[0], id=7, label="car", mask=encode_rle(found[0]))]},
        {"frame": 2, "time": 0.1, "objects": []},
        {
            "frame": 4,
            "time": 0.2,
            "objects": [
                instance(0, found[1], id=9, label=None, mask=encode_rle(found[1])),
                instance(1, found[0], id=7, label="car", mask=encode_rle(found[0])),
            ],
        },
    ]
    frames = dict(track_frames(lines))
    assert sorted(frames) == [0, 2, 4]
    assert arr(frames[0].tracker_id).tolist() == [7] and np.array_equal(arr(frames[0].mask), found[:1])
    assert len(frames[2]) == 0
    assert arr(frames[4].tracker_id).tolist() == [9, 7]
    assert arr(frames[4].class_id).tolist() == [1, 0]  # numbered across the video: car first seen on frame 0
    assert list(frames[4].data["class_name"]) == ["object", "car"]
    assert np.array_equal(arr(frames[4].mask), found[[1, 0]])


def test_coco_becomes_detections_per_file_with_every_image_present() -> None:
    found = masks()
    annotation = {
        "id": 1,
        "image_id": 2,
        "category_id": 2,
        "segmentation": encode_rle(found[1]),
        "bbox": [2.0, 25.0, 10.0, 13.0],
        "area": float(found[1].sum()),
        "score": 0.25,
    }
    coco = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 50, "height": 40},
            {"id": 2, "file_name": "b/c.png", "width": 50, "height": 40},
        ],
        "annotations": [annotation],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "dog"}],
    }
    found_by_file = from_coco(coco)
    assert list(found_by_file) == ["a.png", "b/c.png"] and len(found_by_file["a.png"]) == 0
    b = found_by_file["b/c.png"]
    assert b.xyxy.tolist() == [[2, 25, 12, 38]] and arr(b.class_id).tolist() == [1]
    assert list(b.data["class_name"]) == ["dog"] and arr(b.confidence).tolist() == [0.25]
    assert np.array_equal(arr(b.mask), found[1:2])
