"""The admission path of every job, whichever route it came by (``POST /v1/jobs`` or the Roboflow-compatible
routes): parse and validate, check what needs the server's state (uploads, URLs, buckets, bounds), then create the
record (tenant quota, idempotency) and enqueue it, so that an accepted job is never left without its message."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from flask import request
from pydantic import TypeAdapter, ValidationError

from api.context import services, tenant
from api.errors import RETRY_AFTER_SECONDS, ApiError, invalid
from api.uploads import store_upload
from tasks.batch_specs import BatchSpec, ManifestInputs, PrefixInputs, item_spec
from tasks.egress import check_url
from tasks.errors import BrokerUnavailableError, MediaFetchError, MediaNotFoundError, UrlRefusedError
from tasks.jobs import Job, JobSpec, new_job
from tasks.specs import (
    Base64Image,
    ConceptSpec,
    S3Image,
    SegmentSpec,
    UploadImage,
    UrlImage,
    error_code,
    validation_details,
)
from tasks.store import Idempotency
from tasks.track_specs import TrackSpec
from tasks.uploads import Upload

JOB_SPEC: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)
MAX_IDEMPOTENCY_KEY_CHARS = 255


def submit_job(spec: JobSpec, idempotency: Idempotency | None = None, job_id: str | None = None) -> tuple[Job, bool]:
    """Admit ``spec`` for the caller's tenant and enqueue it (as ``job_id`` if given); returns the job and whether it
    is an idempotent replay of an earlier one (then nothing new was created)."""
    svc = services()
    if idempotency is not None:  # a replay answers before anything is stored (the atomic create decides races)
        first = svc.jobs.replay(tenant(), idempotency)
        if first is not None:
            return first, True
    spec = _admit(spec)
    if spec.webhook is not None:
        svc.webhook_secrets.current(tenant())  # created on first use, so the first event is already signed
    limits = svc.api.limits_for(tenant())
    job = new_job(spec, tenant(), job_id)
    job, replayed = svc.jobs.create(job, max_active=limits.max_queued_jobs, idempotency=idempotency)
    if replayed:
        return job, True
    try:
        svc.dispatch.enqueue(job)
    except Exception as e:  # kombu raises many types; the job must not stay queued without a message
        svc.jobs.fail_unsent(job.id, BrokerUnavailableError(f"could not enqueue: {e}"))
        if idempotency is not None:
            svc.jobs.forget_idempotency(job, idempotency.key)
        raise ApiError(
            503, "broker_unavailable", "could not enqueue the job; retry later", retry_after=RETRY_AFTER_SECONDS
        ) from e
    return job, False


def json_body() -> Any:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the job as JSON (Content-Type: application/json)")
    try:
        return json.loads(request.get_data())
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {e}") from e
    except RecursionError as e:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from e


def idempotency_of(body: Any) -> Idempotency | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        message = f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
        raise ApiError(422, "validation_error", message, [{"field": "Idempotency-Key", "message": message}])
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Idempotency(key=key, body_sha256=hashlib.sha256(canonical.encode()).hexdigest())


def parse_spec(body: Any) -> JobSpec:
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    try:
        return JOB_SPEC.validate_python(body)
    except ValidationError as e:
        tag = body.get("type") if isinstance(body.get("type"), str) else None
        raise ApiError(422, error_code(e), "the job is invalid", validation_details(e, tag)) from e


def _admit(spec: JobSpec) -> JobSpec:
    """Checks that need the server's state; an inline base64 image becomes an upload (messages carry no bytes)."""
    svc = services()
    if isinstance(spec, BatchSpec):
        _check_batch(spec)
    elif isinstance(spec, TrackSpec):
        _check_media("video", spec.video)
        if spec.detections is not None:
            _check_media("detections", spec.detections)
    else:
        if isinstance(spec.image, Base64Image):
            data = _decode_base64(spec.image.base64, svc.api.max_base64_bytes)
            upload_id = store_upload(data, "application/octet-stream").id
            spec = spec.model_copy(update={"image": UploadImage(upload=upload_id)})
        upload = _check_media("image", spec.image)
        if upload is not None:
            _check_pixels(upload, svc.queue.max_image_pixels)
            if upload.width is not None and upload.height is not None:
                _check_bounds(spec, upload.width, upload.height)
    if spec.webhook is not None:
        _check_url("webhook.url", spec.webhook.url)
    if isinstance(spec, SegmentSpec):
        for i, prompt in enumerate(spec.prompts):
            ref = prompt.mask_input
            if ref is not None and svc.jobs.get(ref.job, tenant()) is None:
                raise invalid(f"prompts.{i}.mask_input.job", f"unknown job {ref.job}", code="unknown_job")
    return spec


def _check_batch(spec: BatchSpec) -> None:
    """The inputs are readable, and each listed item makes a valid job with the template (422 names the item)."""
    inputs = spec.inputs
    if isinstance(inputs, PrefixInputs):
        bucket, _ = inputs.bucket_and_prefix
        _check_bucket("inputs.s3_prefix", bucket)
    elif isinstance(inputs, ManifestInputs):
        _check_media("inputs.manifest", inputs.manifest)
    else:
        for i, item in enumerate(inputs.items):
            _check_media(f"inputs.items.{i}", item.media)
            if item.detections is not None:
                _check_media(f"inputs.items.{i}.detections", item.detections)
            try:
                item_spec(spec.template, item)
            except ValidationError as e:
                details = [
                    d | {"field": f"inputs.items.{i}.{d['field']}"} for d in validation_details(e, spec.template.type)
                ]
                message = f"inputs.items.{i} does not make a valid {spec.template.type} job with the template"
                raise ApiError(422, "invalid_item", message, details) from e


def _check_bucket(field: str, bucket: str) -> None:
    if bucket not in services().storage.readable_buckets:
        message = f"bucket {bucket!r} is not readable by this server (SAMQ_STORAGE_S3_READ_BUCKETS)"
        raise invalid(field, message, code="bucket_not_readable")


def _check_media(field: str, ref: object) -> Upload | None:
    """The reference names a media file the worker may read: a known upload (returned), an allowed URL or bucket."""
    svc = services()
    if isinstance(ref, UploadImage):
        upload = svc.uploads.get(ref.upload, tenant())
        if upload is None:
            raise invalid(f"{field}.upload", f"unknown upload {ref.upload}", code="unknown_upload")
        return upload
    if isinstance(ref, UrlImage):
        _check_url(f"{field}.url", ref.url)
    elif isinstance(ref, S3Image):
        _check_bucket(f"{field}.s3", ref.s3.removeprefix("s3://").split("/", 1)[0])
    return None


def _check_pixels(upload: Upload, limit: int) -> None:
    """The worker's decoded-pixel cap, applied at submit when the header told the image's size."""
    size = None if upload.width is None or upload.height is None else upload.width * upload.height
    if upload.oversized or (size is not None and size > limit):
        announced = "more pixels than Pillow decodes" if size is None else f"{upload.width}x{upload.height} pixels"
        message = f"the image has {announced}; the limit is {limit} pixels (SAMQ_WORKER_MAX_IMAGE_PIXELS)"
        raise ApiError(422, "image_too_large", message, [{"field": "image", "message": message}])


def _check_bounds(spec: JobSpec, width: int, height: int) -> None:
    """Points and boxes must lie on the image (points: 0 ≤ x < width; box corners: 0 ≤ x ≤ width)."""

    def outside(field: str, what: str) -> ApiError:
        return invalid(field, f"{what} lies outside the {width}x{height} image", code="prompt_out_of_bounds")

    if isinstance(spec, SegmentSpec):
        for i, prompt in enumerate(spec.prompts):
            for j, p in enumerate(prompt.points):
                if p.x >= width or p.y >= height:
                    raise outside(f"prompts.{i}.points.{j}", f"point ({p.x:g}, {p.y:g})")
            if prompt.box is not None and (prompt.box.x1 > width or prompt.box.y1 > height):
                raise outside(f"prompts.{i}.box", "the box")
    elif isinstance(spec, ConceptSpec):
        for i, concept in enumerate(spec.prompts):
            for j, box in enumerate(concept.boxes):
                if box.x1 > width or box.y1 > height:
                    raise outside(f"prompts.{i}.boxes.{j}", "the exemplar box")


def _check_url(field: str, url: str) -> None:
    """Refuse at submit a URL the worker would refuse (it checks again at connect time: DNS can change)."""
    try:
        check_url(url, services().queue.allowed_networks)
    except (UrlRefusedError, MediaNotFoundError) as e:
        raise ApiError(422, e.code, e.message, [{"field": field, "message": e.message}]) from e
    except MediaFetchError:  # DNS temporarily failing: not the client's fault; the connect-time check still holds
        pass


def _decode_base64(text: str, limit: int) -> bytes:
    if len(text) > (limit + 2) // 3 * 4 + 4:
        raise ApiError(
            413, "payload_too_large", f"image.base64 decodes to more than {limit} bytes (SAMQ_API_MAX_BASE64_BYTES)"
        )
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as e:
        raise invalid("image.base64", f"not valid base64: {e}", code="invalid_base64") from e
    if len(data) > limit:
        raise ApiError(
            413, "payload_too_large", f"image.base64 decodes to more than {limit} bytes (SAMQ_API_MAX_BASE64_BYTES)"
        )
    return data
