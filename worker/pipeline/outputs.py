"""Result documents and files written under ``jobs/{job_id}/``; a re-run overwrites the same keys.

A result's files are written at once (:meth:`JobObjects.writes`), each as soon as it is encoded: none is read before
the job's result names them, and that is committed after they have all been written."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from tasks.everything_specs import EverythingSpec
from tasks.jobs import Job, JobResult, ResultFile
from tasks.names import MASK_LOGITS, RESULT_DOCUMENT
from tasks.specs import ConceptSpec, MaskFormat, SegmentSpec
from worker.annotate import Canvas
from worker.encoders import decode_rle, encode_png, encode_polygons, encode_rle
from worker.pipeline.categories import DEFAULT_CATEGORY, CategoryTable, job_categories
from worker.pipeline.objects import JobObjects, Writes
from worker.results import InstanceMasks, boxes_from_masks
from worker.runners.concept import ConceptInstances

if TYPE_CHECKING:  # sam2's import is the runner's to make, when a worker first runs an everything job
    from worker.runners.sam2_everything import GeneratedMasks

LOW_RES_LOGITS = "low_res_logits.npy"
"""Per-instance 256×256 mask logits, kept so that a later job can refine a mask (``mask_input``)."""
ANNOTATED_IMAGE = "annotated.png"
"""The instances drawn on the image (``output.annotated``)."""
DETECTION_FIELDS = {"label", "class_id", "detection_confidence"}
"""What a segment prompt may say about the detection it came from; its instance carries them."""

Found = Iterable[tuple[npt.NDArray[np.bool_], npt.NDArray[np.float32], np.float32, int]]
"""Each instance's (H, W) mask, XYXY box, score and category id."""
ColourBy = Callable[[dict[str, Any]], int]
"""An instance record → its palette colour index."""


def write_segment_result(
    objects: JobObjects,
    job: Job,
    spec: SegmentSpec,
    masks: InstanceMasks,
    image_hw: tuple[int, int],
    image_id: str,
    embedding_source: str,
    keep_logits: bool = True,
    image: npt.NDArray[np.uint8] | None = None,
) -> JobResult:
    """``image``: the decoded RGB image, to draw ``annotated.png`` on (``output.annotated``)."""
    categories = job_categories(spec)
    details = [
        spec.prompts[p].model_dump(include=DETECTION_FIELDS, exclude_none=True) if spec.prompts else {}
        for p in masks.prompt_index.tolist()  # an unprompted instance has none
    ]
    category_ids = [categories.add(d.get("label")) for d in details]
    canvas, colour_by = Canvas(image) if image is not None else None, _colour_by(categories)
    found = zip(masks.masks, masks.boxes, masks.scores, category_ids, strict=True)
    with objects.writes(job) as writes:
        logits_file = _write_logits(writes, masks) if keep_logits else None  # the largest file, first: it is written
        instances, files = _instances(writes, spec.output.formats, found, canvas, colour_by)  # while masks encode
        labels: dict[str, int] = {}
        for instance, prompt_index, detail in zip(instances, masks.prompt_index.tolist(), details, strict=True):
            instance["prompt_index"] = prompt_index
            instance.update(detail)
            if "label" in detail:
                labels[detail["label"]] = labels.get(detail["label"], 0) + 1
        if canvas is not None:
            prompts = spec.prompts
            canvas.prompts(
                [(p.x, p.y, p.positive) for prompt in prompts for p in prompt.points],
                [(b.x0, b.y0, b.x1, b.y1) for b in (prompt.box for prompt in prompts) if b is not None],
            )
            files.append(_write_annotated(writes, canvas, instances, masks.boxes, colour_by))
        if logits_file is not None:
            files.append(logits_file)
        if masks.logits is not None:  # output format "logits": Roboflow's NPZ, its names
            npz = io.BytesIO()
            np.savez_compressed(npz, masks=masks.logits, low_res_masks=masks.low_res_logits.astype(np.float32))
            files.append(writes.add(MASK_LOGITS, npz.getvalue(), "application/octet-stream"))
        files.append(_write_json(writes, _document(image_hw, image_id, categories, instances)))
    summary: dict[str, Any] = {"instances": len(instances), "image_id": image_id, "embedding": embedding_source}
    if labels:
        summary["instances_per_label"] = labels
    return JobResult(files=files, summary=summary, document=RESULT_DOCUMENT)


def write_concept_result(
    objects: JobObjects,
    job: Job,
    spec: ConceptSpec,
    found: ConceptInstances,
    image_hw: tuple[int, int],
    image_id: str,
    embedding_source: str,
    image: npt.NDArray[np.uint8] | None = None,
) -> JobResult:
    """Instances best first, each labelled with its prompt's phrase (``null`` for an exemplar-only prompt).
    ``image``: the decoded RGB image, to draw ``annotated.png`` on (``output.annotated``)."""
    categories = job_categories(spec)
    phrases = [spec.prompts[p].text for p in found.prompt_index.tolist()]
    category_ids = [categories.add(phrase) for phrase in phrases]
    canvas, colour_by = Canvas(image) if image is not None else None, _colour_by(categories)
    masks = zip(found.iter_masks(), found.boxes, found.scores, category_ids, strict=True)
    with objects.writes(job) as writes:
        instances, files = _instances(writes, spec.output.formats, masks, canvas, colour_by)
        for instance, prompt_index, phrase in zip(instances, found.prompt_index.tolist(), phrases, strict=True):
            instance["label"] = phrase
            instance["prompt_index"] = prompt_index
        if canvas is not None:
            files.append(_write_annotated(writes, canvas, instances, found.boxes, colour_by))
        files.append(_write_json(writes, _document(image_hw, image_id, categories, instances)))
    per_prompt = [0] * len(spec.prompts)
    for prompt_index in found.prompt_index.tolist():
        per_prompt[prompt_index] += 1
    summary = {
        "instances": len(instances),
        "instances_per_prompt": per_prompt,
        "image_id": image_id,
        "embedding": embedding_source,
    }
    return JobResult(files=files, summary=summary, document=RESULT_DOCUMENT)


def write_everything_result(
    objects: JobObjects,
    job: Job,
    spec: EverythingSpec,
    found: GeneratedMasks,
    image_id: str,
    embedding_source: str,
    image: npt.NDArray[np.uint8],
) -> JobResult:
    """Every mask in the generator's order; ``score`` is its predicted IoU. ``image``: the decoded RGB image (its
    size, and ``annotated.png`` when asked for). Masks are decoded one at a time from the runner's RLE."""
    categories = CategoryTable()
    category_id = categories.add(None)
    canvas, colour_by = Canvas(image) if spec.output.annotated else None, _colour_by(categories)
    masks = (decode_rle(rle) for rle in found.rles)
    lazy = (  # samq's boxes end one past the mask's last pixel (the generator's end on it): taken from each mask
        (mask, boxes_from_masks(mask[None])[0], iou, category_id)
        for mask, iou in zip(masks, found.predicted_iou, strict=True)
    )
    with objects.writes(job) as writes:
        instances, files = _instances(writes, spec.output.formats, lazy, canvas, colour_by)
        for i, instance in enumerate(instances):
            x, y = found.point_coords[i].tolist()
            cx0, cy0, cx1, cy1 = found.crop_boxes[i].tolist()
            instance["predicted_iou"] = float(found.predicted_iou[i])
            instance["stability_score"] = float(found.stability_score[i])
            instance["point_coords"] = [[x, y]]
            instance["crop_box"] = {"x0": cx0, "y0": cy0, "x1": cx1, "y1": cy1}
        if canvas is not None:
            boxes = np.array([[b["x0"], b["y0"], b["x1"], b["y1"]] for b in (i["bbox"] for i in instances)], np.float32)
            files.append(_write_annotated(writes, canvas, instances, boxes.reshape(-1, 4), colour_by))
        image_hw = (int(image.shape[0]), int(image.shape[1]))
        files.append(_write_json(writes, _document(image_hw, image_id, categories, instances)))
    summary = {
        "instances": len(instances),
        "candidates_upsampled": found.upsampled,
        "image_id": image_id,
        "embedding": embedding_source,
    }
    return JobResult(files=files, summary=summary, document=RESULT_DOCUMENT)


def _instances(
    writes: Writes,
    formats: list[MaskFormat],
    found: Found,
    canvas: Canvas | None,
    colour_by: ColourBy,
) -> tuple[list[dict[str, Any]], list[ResultFile]]:
    """One record per mask (index, score, bbox, area, category, and each requested encoding); PNGs sent as files;
    each mask drawn on ``canvas`` if given. Masks are consumed one at a time, so a lazy iterable never has them all
    in memory."""
    files: list[ResultFile] = []
    instances: list[dict[str, Any]] = []
    for i, (mask, box, score, category_id) in enumerate(found):
        x0, y0, x1, y1 = (float(v) for v in box)
        instance: dict[str, Any] = {
            "index": i,
            "score": float(score),
            "bbox": {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
            "area": int(np.count_nonzero(mask)),
            "category_id": category_id,
        }
        if "rle" in formats:
            instance["rle"] = encode_rle(mask)
        if "polygon" in formats:
            instance["polygon"] = encode_polygons(mask)
        if "png" in formats:
            name = f"masks/{i}.png"
            files.append(writes.add(name, encode_png(mask), "image/png"))
            instance["png"] = name
        if canvas is not None:
            canvas.mask(mask, colour_by(instance))
        instances.append(instance)
    return instances, files


def _write_logits(writes: Writes, masks: InstanceMasks) -> ResultFile:
    logits = io.BytesIO()
    np.save(logits, masks.low_res_logits.astype(np.float32), allow_pickle=False)
    return writes.add(LOW_RES_LOGITS, logits.getvalue(), "application/octet-stream")


def _colour_by(categories: CategoryTable) -> ColourBy:
    """By category when the job names any (labels, phrases), else by instance."""
    if any(entry["name"] != DEFAULT_CATEGORY for entry in categories.entries()):
        return lambda instance: int(instance["category_id"]) - 1
    return lambda instance: int(instance["index"])


def _write_annotated(
    writes: Writes,
    canvas: Canvas,
    instances: list[dict[str, Any]],
    boxes: npt.NDArray[np.float32],
    colour_by: ColourBy,
) -> ResultFile:
    """Boxes and captions ("label score", else "#index score") over the tinted masks, written as annotated.png."""
    captions = [f"{i.get('label') or '#' + str(i['index'])} {i['score']:.2f}" for i in instances]
    canvas.boxes(boxes, [colour_by(i) for i in instances], captions)
    return writes.add(ANNOTATED_IMAGE, canvas.png(), "image/png")


def _document(
    image_hw: tuple[int, int], image_id: str, categories: CategoryTable, instances: list[dict[str, Any]]
) -> dict[str, Any]:
    height, width = image_hw
    image = {"width": width, "height": height, "image_id": image_id}
    return {"image": image, "categories": categories.entries(), "instances": instances}


def write_embed_result(
    objects: JobObjects, job: Job, image_id: str, image_hw: tuple[int, int], embedding_source: str
) -> JobResult:
    height, width = image_hw
    document = {"image": {"width": width, "height": height, "image_id": image_id}, "model": job.model}
    with objects.writes(job) as writes:
        files = [_write_json(writes, document)]
    return JobResult(files=files, summary={"image_id": image_id, "embedding": embedding_source})


def _write_json(writes: Writes, document: dict[str, Any]) -> ResultFile:
    data = json.dumps(document, separators=(",", ":")).encode()
    return writes.add(RESULT_DOCUMENT, data, "application/json")
