"""samq results as supervision's ``sv.Detections``: an image result, a track's frames, a batch's COCO export.

Class ids are positions in the job's category table (``result.json``'s ``categories``, the same table as a batch's
COCO export), so ``class_id`` and ``data["class_name"]`` agree with COCO; where a document has no table, labels are
numbered in order of first appearance.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import supervision as sv
from PIL import Image
from pycocotools import mask as mask_utils

DEFAULT_CLASS = "object"
"""The class of an instance without a label (as in samq's COCO export)."""


def from_result(document: Mapping[str, Any], read: Callable[[str], bytes]) -> sv.Detections:
    """A segment, concept or everything ``result.json`` as ``sv.Detections``; ``read`` fetches a result file (PNG
    masks)."""
    image = document["image"]
    height, width = int(image["height"]), int(image["width"])
    instances = document["instances"]
    masks = np.zeros((len(instances), height, width), dtype=bool)
    for i, instance in enumerate(instances):
        masks[i] = decode_mask(instance, (height, width), read)
    class_ids, names = _classes(document, instances)
    return sv.Detections(
        xyxy=_boxes(instances),
        mask=masks,
        confidence=np.array([float(inst["score"]) for inst in instances], dtype=np.float32),
        class_id=class_ids,
        data={
            "class_name": np.array(names, dtype=object),
            "prompt_index": np.array([int(inst.get("prompt_index", -1)) for inst in instances], dtype=int),
        },
    )


def track_frames(lines: Iterable[Mapping[str, Any]]) -> Iterator[tuple[int, sv.Detections]]:
    """``tracks.jsonl`` records as ``(frame, sv.Detections)``, ``tracker_id`` the object's id; labels numbered in
    order of first appearance across the whole video."""
    numbering: dict[str, int] = {}
    for line in lines:
        objects = line["objects"]
        names = [obj.get("label") or DEFAULT_CLASS for obj in objects]
        masks = [mask_utils.decode(_rle(obj["mask"])).astype(bool) for obj in objects]
        detections = sv.Detections(
            xyxy=_boxes(objects),
            mask=np.stack(masks) if masks else None,
            confidence=np.array([float(obj["score"]) for obj in objects], dtype=np.float32),
            class_id=np.array([numbering.setdefault(n, len(numbering)) for n in names], dtype=int),
            tracker_id=np.array([int(obj["id"]) for obj in objects], dtype=int),
            data={"class_name": np.array(names, dtype=object)},
        )
        yield int(line["frame"]), detections


def from_coco(coco: Mapping[str, Any]) -> dict[str, sv.Detections]:
    """A COCO instances file (a batch's ``coco.json``) as file name → ``sv.Detections``, every image present (an
    image without annotations gets empty detections); class ids are positions in ``categories``."""
    categories = coco["categories"]
    position = {int(c["id"]): i for i, c in enumerate(categories)}
    by_image: dict[int, list[Mapping[str, Any]]] = {int(image["id"]): [] for image in coco["images"]}
    for annotation in coco["annotations"]:
        by_image[int(annotation["image_id"])].append(annotation)
    found = {}
    for image in coco["images"]:
        annotations = by_image[int(image["id"])]
        height, width = int(image["height"]), int(image["width"])
        masks = np.zeros((len(annotations), height, width), dtype=bool)
        for i, annotation in enumerate(annotations):
            masks[i] = mask_utils.decode(_rle(annotation["segmentation"])).astype(bool)
        class_ids = np.array([position[int(a["category_id"])] for a in annotations], dtype=int)
        xywh = np.array([a["bbox"] for a in annotations], dtype=np.float32).reshape(-1, 4)
        found[str(image["file_name"])] = sv.Detections(
            xyxy=np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1),
            mask=masks,
            confidence=np.array([float(a.get("score", 1.0)) for a in annotations], dtype=np.float32),
            class_id=class_ids,
            data={"class_name": np.array([categories[i]["name"] for i in class_ids], dtype=object)},
        )
    return found


def dataset(coco: Mapping[str, Any], images_dir: Path) -> sv.DetectionDataset:
    """A COCO instances file over the images under ``images_dir``, read by supervision's own COCO loader."""
    with tempfile.TemporaryDirectory() as scratch:
        annotations = Path(scratch) / "coco.json"
        annotations.write_text(json.dumps(coco), encoding="utf-8")
        return sv.DetectionDataset.from_coco(
            images_directory_path=str(images_dir), annotations_path=str(annotations), force_masks=True
        )


def decode_mask(
    instance: Mapping[str, Any], size: tuple[int, int], read: Callable[[str], bytes]
) -> npt.NDArray[np.bool_]:
    """An instance's (H, W) mask from whichever encoding it carries: RLE, polygons (outer rings and holes) or PNG."""
    if "rle" in instance:
        return np.asarray(mask_utils.decode(_rle(instance["rle"])), dtype=bool)
    if "polygon" in instance:
        canvas = np.zeros(size, dtype=np.uint8)
        rings = [_ring(ring) for polygon in instance["polygon"] for ring in (polygon["outer"], *polygon["holes"])]
        if rings:
            cv2.fillPoly(canvas, rings, 1)  # every ring at once: OpenCV fills by parity, so holes stay empty
        return canvas.astype(bool)
    if "png" in instance:
        return np.asarray(Image.open(io.BytesIO(read(instance["png"]))).convert("L")) > 0
    raise ValueError(f"instance {instance.get('index')} carries no mask: ask for output formats rle, polygon or png")


def _classes(document: Mapping[str, Any], instances: Sequence[Mapping[str, Any]]) -> tuple[npt.NDArray[Any], list[str]]:
    categories = document.get("categories")
    if categories and all("category_id" in inst for inst in instances):
        position = {int(c["id"]): i for i, c in enumerate(categories)}
        ids = [position[int(inst["category_id"])] for inst in instances]
        return np.array(ids, dtype=int), [str(categories[i]["name"]) for i in ids]
    names = [inst.get("label") or DEFAULT_CLASS for inst in instances]
    numbering: dict[str, int] = {}
    return np.array([numbering.setdefault(n, len(numbering)) for n in names], dtype=int), names


def _boxes(instances: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.float32]:
    boxes = [[b["x0"], b["y0"], b["x1"], b["y1"]] for b in (inst["bbox"] for inst in instances)]
    return np.array(boxes, dtype=np.float32).reshape(-1, 4)


def _rle(rle: Mapping[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": list(rle["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}


def _ring(flat: Sequence[float]) -> npt.NDArray[np.int32]:
    return np.round(np.asarray(flat, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
