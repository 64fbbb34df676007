"""Roboflow Inference's SAM2/SAM3 routes over samq's queue: ``POST /sam2/embed_image``, ``/sam2/segment_image``,
``/sam3/embed_image``, ``/sam3/visual_segment`` and ``/sam3/concept_segment``.

Each call is translated into a native job (``embed``, ``segment``, ``concept``), admitted exactly as ``POST
/v1/jobs`` admits one (validation, tenants, quotas, SSRF rules), waited for, and answered 200 with Roboflow's
response body: Roboflow's client takes any 2xx as the final answer. A job that outlives
``SAMQ_API_ROBOFLOW_WAIT_SECONDS`` answers 504 naming the job, which goes on and stays readable at
``/v1/jobs/{id}``. Errors carry Roboflow's top-level ``message`` besides samq's ``error`` object.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel

from api.admission import json_body, parse_spec, submit_job
from api.context import services, tenant
from api.errors import RETRY_AFTER_SECONDS, ROBOFLOW_BLUEPRINT, ApiError, invalid
from api.roboflow.requests import (
    ConceptRequest,
    ImageRequest,
    Sam2Request,
    concept_body,
    segment_body,
)
from api.roboflow.responses import concept_response, embed_response, segment_response
from storage.base import ObjectNotFoundError
from tasks.jobs import Job, JobStatus
from tasks.names import MASK_LOGITS
from tasks.specs import MAX_DETECTIONS, SHA256_HEX, ModelId

bp = Blueprint(ROBOFLOW_BLUEPRINT, __name__)
R = TypeVar("R", bound=BaseModel)

FAILED_STATUS = {
    "invalid_image": 400,
    "invalid_base64": 400,
    "unsupported_media_type": 400,
    "image_too_large": 413,
    "media_too_large": 413,
    "media_not_found": 422,
    "url_refused": 422,
    "prompt_out_of_bounds": 422,
    "embedding_not_found": 422,
    "mask_input_not_found": 422,
    "mask_input_mismatch": 422,
    "media_fetch_failed": 502,
    "storage_unavailable": 503,
}
"""The status of a call whose job failed, by the job's ``error.code`` (anything else: 500)."""


def api_key() -> str | None:
    """The caller's key where Roboflow's clients put it: the ``api_key`` query parameter, an ``Authorization:
    Bearer`` header, or the body's ``api_key`` (what ``inference-sdk`` sends to a self-hosted server)."""
    if request.args.get("api_key"):
        return request.args["api_key"]
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        return key.strip()
    body = request.get_json(silent=True)
    in_body = body.get("api_key") if isinstance(body, dict) else None
    return in_body if isinstance(in_body, str) and in_body else None


@bp.post("/sam2/embed_image")
def sam2_embed_image() -> Response:
    started = time.perf_counter()
    call = _parse(Sam2Request)
    return _embed(call, call.sam2_model(services().api.roboflow_sam2_version), started)


@bp.post("/sam3/embed_image")
def sam3_embed_image() -> Response:
    started = time.perf_counter()
    call = _parse(Sam2Request)
    call.check_sam3_model()
    return _embed(call, ModelId.SAM3, started)


@bp.post("/sam2/segment_image")
def sam2_segment_image() -> Response:
    started = time.perf_counter()
    call = _parse(Sam2Request)
    return _segment(call, call.sam2_model(services().api.roboflow_sam2_version), started)


@bp.post("/sam3/visual_segment")
def sam3_visual_segment() -> Response:
    started = time.perf_counter()
    call = _parse(Sam2Request)
    call.check_sam3_model()
    return _segment(call, ModelId.SAM3, started)


@bp.post("/sam3/concept_segment")
def sam3_concept_segment() -> Response:
    started = time.perf_counter()
    call = _parse(ConceptRequest)
    call.check_sam3_model()
    if call.image is None:
        raise invalid("image", "concept segmentation needs the image itself (Roboflow's does too)", "image_required")
    job = _run(concept_body(call, call.image.media(), MAX_DETECTIONS))
    return jsonify(concept_response(_document(job), call, call.format, _since(started)))


def _embed(call: Sam2Request, model: ModelId, started: float) -> Response:
    svc = services()
    if call.image is None:  # a remembered name: nothing to compute
        if call.image_id is None:
            raise invalid("image", "send the image (with an image_id to remember it by)", "image_required")
        if svc.roboflow.content_hash(tenant(), model.value, call.image_id) is None:
            raise _unknown_image(call.image_id)
        return jsonify(embed_response(call.image_id, _since(started)))
    job = _run({"type": "embed", "model": model.value, "image": call.image.media()})
    content_hash = _summary(job)["image_id"]
    if call.image_id is not None:
        svc.roboflow.remember_image(tenant(), model.value, call.image_id, content_hash)
    return jsonify(embed_response(call.image_id or content_hash, _since(started)))


def _segment(call: Sam2Request, model: ModelId, started: float) -> Response:
    svc = services()
    image, image_key = _image(call, model)
    prompts = [p.key() for p in call.prompts]
    mask_inputs: list[dict[str, Any] | None] = [None] * len(prompts)
    if call.load_logits_from_cache and prompts:
        prior = svc.roboflow.prior_logits(tenant(), model.value, image_key, prompts)
        if prior is not None and svc.jobs.get(prior.job, tenant()) is not None:
            mask_inputs = [None if i is None else {"job": prior.job, "index": i} for i in prior.indices]
    job = _run(segment_body(call, model, image, mask_inputs))
    if call.image_id is not None and call.image is not None:
        svc.roboflow.remember_image(tenant(), model.value, call.image_id, _summary(job)["image_id"])
    if call.save_logits_to_cache and prompts:
        svc.roboflow.save_logits(tenant(), model.value, image_key, prompts, job.id)
    if call.format == "binary":  # Roboflow's NPZ, written by the job (output format "logits")
        return Response(_file(job, MASK_LOGITS), mimetype="application/octet-stream")
    return jsonify(segment_response(_document(job), call.format, _since(started)))


def _image(call: ImageRequest, model: ModelId) -> tuple[dict[str, str], str]:
    """The native image reference of a call, and the name its saved logits go under: the caller's ``image_id``
    where it sent one, else the image itself."""
    if call.image is not None:
        return call.image.media(), call.image_id or f"{call.image.type}:{_digest(call.image.value)}"
    if call.image_id is None:
        raise invalid("image", "send the image, or the image_id of an earlier embed_image call", "image_required")
    content_hash = services().roboflow.content_hash(tenant(), model.value, call.image_id)
    if content_hash is None and re.fullmatch(SHA256_HEX, call.image_id):
        content_hash = call.image_id  # samq's own id (an embed call that named none answers the content hash)
    if content_hash is None:
        raise _unknown_image(call.image_id)
    return {"image_id": content_hash}, call.image_id


def _run(body: dict[str, Any]) -> Job:
    """Admit the native job of a call (or join the same call's job still in flight), wait for it, and return it
    succeeded; any other end becomes the call's error."""
    svc = services()
    try:
        spec = parse_spec(body | {"metadata": {"roboflow_route": request.path}})  # which call made it, in /v1/jobs
    except ApiError as e:  # a rule of samq's beyond Roboflow's schema (a box reaching past the image's edge, …)
        raise ApiError(e.status, "invalid_value" if e.status == 422 else e.code, e.message, e.details) from e
    if not svc.roboflow_waiters.acquire(blocking=False):
        raise ApiError(
            503,
            "too_many_waiting",
            f"{svc.api.roboflow_max_waiting} Roboflow-compatible calls are already waiting "
            "(SAMQ_API_ROBOFLOW_MAX_WAITING); retry shortly, or submit to /v1/jobs",
            retry_after=RETRY_AFTER_SECONDS,
        )
    try:
        wait = svc.api.roboflow_wait_seconds
        call = f"{request.path} {json.dumps(body, sort_keys=True, separators=(',', ':'))}"
        joined = svc.roboflow.job_in_flight(tenant(), call)
        job = svc.jobs.get(joined, tenant()) if joined is not None else None
        if job is None or job.status.is_terminal:
            job, _ = submit_job(spec)
            svc.roboflow.in_flight(tenant(), call, job.id, wait * 4)
        finished = svc.jobs.wait_terminal(job.id, wait) or job
    finally:
        svc.roboflow_waiters.release()
    if finished.status == JobStatus.SUCCEEDED:
        return finished
    if not finished.status.is_terminal:
        message = f"job {job.id} is still {finished.status.value} after {wait} s; it goes on: poll /v1/jobs/{job.id}"
        raise ApiError(504, "job_still_running", message, [{"job_id": job.id}], retry_after=RETRY_AFTER_SECONDS)
    if finished.error is None:
        raise ApiError(409, "job_canceled", f"job {job.id} was canceled", [{"job_id": job.id}])
    status = FAILED_STATUS.get(finished.error.code, 500)
    message = f"job {job.id} failed: {finished.error.message}"
    raise ApiError(status, finished.error.code, message, [{"job_id": job.id}])


def _document(job: Job) -> dict[str, Any]:
    assert job.result is not None
    loaded: dict[str, Any] = json.loads(_file(job, job.result.document))
    return loaded


def _file(job: Job, name: str) -> bytes:
    assert job.result is not None
    stored = next(f for f in job.result.files if f.name == name)
    try:
        svc = services()
        return svc.storage_slots.call(lambda: svc.objects.get(stored.key))
    except ObjectNotFoundError as e:
        raise ApiError(410, "result_expired", f"the result of job {job.id} is no longer stored") from e


def _summary(job: Job) -> dict[str, Any]:
    assert job.result is not None
    return job.result.summary


def _parse(model: type[R]) -> R:
    return model.model_validate(json_body())


def _unknown_image(image_id: str) -> ApiError:
    message = f"unknown image_id {image_id!r} for this model: embed it first (embed_image), or send the image"
    return invalid("image_id", message, code="unknown_image_id")


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 6)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
