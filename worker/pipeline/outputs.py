"""Result documents and files written under ``jobs/{job_id}/``; a re-run overwrites the same keys."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from tasks.jobs import Job, JobResult, ResultFile
from tasks.names import MASK_LOGITS, RESULT_DOCUMENT
from tasks.specs import ConceptSpec, MaskFormat, SegmentSpec
from worker.encoders import encode_png, encode_polygons, encode_rle
from worker.pipeline.objects import JobObjects
from worker.results import InstanceMasks
from worker.runners.concept import ConceptInstances

LOW_RES_LOGITS = "low_res_logits.npy"
"""Per-instance 256×256 mask logits, kept so that a later job can refine a mask (``mask_input``)."""
DETECTION_FIELDS = {"label", "class_id", "detection_confidence"}
"""What a segment prompt may say about the detection it came from; its instance carries them."""


def write_segment_result(
    objects: JobObjects,
    job: Job,
    spec: SegmentSpec,
    masks: InstanceMasks,
    image_hw: tuple[int, int],
    image_id: str,
    embedding_source: str,
    keep_logits: bool = True,
) -> JobResult:
    instances, files = _instances(objects, job, spec.output.formats, masks.masks, masks.boxes, masks.scores)
    labels: dict[str, int] = {}
    for instance, prompt_index in zip(instances, masks.prompt_index.tolist(), strict=True):
        instance["prompt_index"] = prompt_index
        if spec.prompts:  # else the one unprompted instance
            instance.update(spec.prompts[prompt_index].model_dump(include=DETECTION_FIELDS, exclude_none=True))
            if "label" in instance:
                labels[instance["label"]] = labels.get(instance["label"], 0) + 1
    if keep_logits:
        logits = io.BytesIO()
        np.save(logits, masks.low_res_logits.astype(np.float32), allow_pickle=False)
        files.append(objects.write(job, LOW_RES_LOGITS, logits.getvalue(), "application/octet-stream"))
    if masks.logits is not None:  # output format "logits": Roboflow's NPZ, its names
        npz = io.BytesIO()
        np.savez_compressed(npz, masks=masks.logits, low_res_masks=masks.low_res_logits.astype(np.float32))
        files.append(objects.write(job, MASK_LOGITS, npz.getvalue(), "application/octet-stream"))
    files.append(_write_json(objects, job, _document(image_hw, image_id, instances)))
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
) -> JobResult:
    """Instances best first, each labelled with its prompt's phrase (``null`` for an exemplar-only prompt)."""
    instances, files = _instances(objects, job, spec.output.formats, found.iter_masks(), found.boxes, found.scores)
    for instance, prompt_index in zip(instances, found.prompt_index.tolist(), strict=True):
        instance["label"] = spec.prompts[prompt_index].text
        instance["prompt_index"] = prompt_index
    files.append(_write_json(objects, job, _document(image_hw, image_id, instances)))
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


def _instances(
    objects: JobObjects,
    job: Job,
    formats: list[MaskFormat],
    masks: Iterable[npt.NDArray[np.bool_]],
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
) -> tuple[list[dict[str, Any]], list[ResultFile]]:
    """One record per mask (index, score, bbox, area, and each requested encoding); PNGs written as files. Masks are
    consumed one at a time, so a lazy iterable never has them all in memory."""
    files: list[ResultFile] = []
    instances: list[dict[str, Any]] = []
    for i, mask in enumerate(masks):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        instance: dict[str, Any] = {
            "index": i,
            "score": float(scores[i]),
            "bbox": {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
            "area": int(mask.sum()),
        }
        if "rle" in formats:
            instance["rle"] = encode_rle(mask)
        if "polygon" in formats:
            instance["polygon"] = encode_polygons(mask)
        if "png" in formats:
            name = f"masks/{i}.png"
            files.append(objects.write(job, name, encode_png(mask), "image/png"))
            instance["png"] = name
        instances.append(instance)
    return instances, files


def _document(image_hw: tuple[int, int], image_id: str, instances: list[dict[str, Any]]) -> dict[str, Any]:
    height, width = image_hw
    return {"image": {"width": width, "height": height, "image_id": image_id}, "instances": instances}


def write_embed_result(
    objects: JobObjects, job: Job, image_id: str, image_hw: tuple[int, int], embedding_source: str
) -> JobResult:
    height, width = image_hw
    document = {"image": {"width": width, "height": height, "image_id": image_id}, "model": job.model}
    files = [_write_json(objects, job, document)]
    return JobResult(files=files, summary={"image_id": image_id, "embedding": embedding_source})


def _write_json(objects: JobObjects, job: Job, document: dict[str, Any]) -> ResultFile:
    data = json.dumps(document, separators=(",", ":")).encode()
    return objects.write(job, RESULT_DOCUMENT, data, "application/json")
