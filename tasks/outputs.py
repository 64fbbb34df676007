"""Result documents and files written under ``jobs/{job_id}/``; a re-run overwrites the same keys."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from storage import keys
from storage.base import ObjectStore, StorageError
from tasks.errors import StorageUnavailableError
from tasks.jobs import Job, JobResult, ResultFile
from tasks.specs import SegmentSpec
from worker.encoders import encode_png, encode_polygons, encode_rle
from worker.results import InstanceMasks

RESULT_DOCUMENT = "result.json"
LOW_RES_LOGITS = "low_res_logits.npy"
"""Per-instance 256×256 mask logits, kept so that a later job can refine a mask (``mask_input``)."""


def write_segment_result(
    objects: ObjectStore,
    job: Job,
    spec: SegmentSpec,
    masks: InstanceMasks,
    image_hw: tuple[int, int],
    image_id: str,
    embedding_source: str,
) -> JobResult:
    files: list[ResultFile] = []
    instances: list[dict[str, Any]] = []
    for i in range(len(masks.scores)):
        mask = masks.masks[i]
        x0, y0, x1, y1 = (float(v) for v in masks.boxes[i])
        instance: dict[str, Any] = {
            "index": i,
            "prompt_index": int(masks.prompt_index[i]),
            "score": float(masks.scores[i]),
            "bbox": {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
            "area": int(mask.sum()),
        }
        if "rle" in spec.output.formats:
            instance["rle"] = encode_rle(mask)
        if "polygon" in spec.output.formats:
            instance["polygon"] = encode_polygons(mask)
        if "png" in spec.output.formats:
            name = f"masks/{i}.png"
            files.append(_write(objects, job, name, encode_png(mask), "image/png"))
            instance["png"] = name
        instances.append(instance)
    logits = io.BytesIO()
    np.save(logits, masks.low_res_logits.astype(np.float32), allow_pickle=False)
    files.append(_write(objects, job, LOW_RES_LOGITS, logits.getvalue(), "application/octet-stream"))
    height, width = image_hw
    document = {"image": {"width": width, "height": height, "image_id": image_id}, "instances": instances}
    files.append(_write_json(objects, job, document))
    summary = {"instances": len(instances), "image_id": image_id, "embedding": embedding_source}
    return JobResult(files=files, summary=summary, document=RESULT_DOCUMENT)


def write_embed_result(
    objects: ObjectStore, job: Job, image_id: str, image_hw: tuple[int, int], embedding_source: str
) -> JobResult:
    height, width = image_hw
    document = {"image": {"width": width, "height": height, "image_id": image_id}, "model": job.model}
    files = [_write_json(objects, job, document)]
    return JobResult(files=files, summary={"image_id": image_id, "embedding": embedding_source})


def _write_json(objects: ObjectStore, job: Job, document: dict[str, Any]) -> ResultFile:
    data = json.dumps(document, separators=(",", ":")).encode()
    return _write(objects, job, RESULT_DOCUMENT, data, "application/json")


def _write(objects: ObjectStore, job: Job, name: str, data: bytes, content_type: str) -> ResultFile:
    key = keys.job_file(job.tenant, job.id, name)
    try:
        objects.put(key, data, content_type)
    except StorageError as e:
        raise StorageUnavailableError(f"could not write {name}: {e}") from e
    return ResultFile(name=name, key=key, bytes=len(data), content_type=content_type)
