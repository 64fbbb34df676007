"""Job routes: submit, read, list, cancel, and the result document."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Annotated, Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from api.context import services, tenant
from api.errors import RETRY_AFTER_SECONDS, ApiError, validation_details
from api.uploads import store_upload
from api.views import JobList, job_object
from storage.base import ObjectNotFoundError
from tasks.dispatch import enqueue
from tasks.errors import BrokerUnavailableError
from tasks.jobs import IllegalTransitionError, Job, JobStatus, new_job
from tasks.specs import Base64Image, JobSpec, S3Image, SegmentSpec, UploadImage
from tasks.store import InvalidCursorError

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
JOB_SPEC: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+)")


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: JobStatus | None = None
    type: str | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: str | None = None


@bp.post("")
def submit() -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
    spec = _admit(_parse_spec(_json_body()))
    svc = services()
    job = new_job(spec, tenant())
    svc.jobs.create(job)
    try:
        enqueue(svc.celery, job)
    except Exception as e:  # kombu raises many types; the job must not stay queued without a message
        svc.jobs.fail_unsent(job.id, BrokerUnavailableError(f"could not enqueue: {e}"))
        raise ApiError(
            503, "broker_unavailable", "could not enqueue the job; retry later", retry_after=RETRY_AFTER_SECONDS
        ) from e
    wait = _prefer_wait(svc.api.max_wait_seconds)
    if wait and svc.waiters.acquire(blocking=False):  # else answer 202 at once: waits never starve the server
        try:
            finished = svc.jobs.wait_terminal(job.id, wait)
        finally:
            svc.waiters.release()
        if finished is not None and finished.status.is_terminal:
            return _job_response(finished), 200
        job = finished or job  # the latest state (e.g. running) beats the one we created
    return _job_response(job), 202, {"Location": f"/v1/jobs/{job.id}"}


@bp.get("")
def list_jobs() -> Response:
    try:
        query = ListQuery.model_validate(request.args.to_dict())
    except ValidationError as e:
        raise ApiError(422, "validation_error", "invalid query parameters", validation_details(e)) from e
    svc = services()
    try:
        jobs, cursor = svc.jobs.list_jobs(
            tenant(), status=query.status, job_type=query.type, limit=query.limit, cursor=query.cursor
        )
    except InvalidCursorError as e:
        raise ApiError(422, "validation_error", str(e), [{"field": "cursor", "message": str(e)}]) from e
    presign = svc.storage.presign_seconds
    page = JobList(data=[job_object(job, svc.objects, presign) for job in jobs], next_cursor=cursor)
    return jsonify(page.model_dump(mode="json"))


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    return _job_response(_owned(job_id))


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> tuple[Response, int]:
    try:
        job = services().jobs.request_cancel(job_id, tenant())
    except IllegalTransitionError as e:
        raise ApiError(409, "job_not_cancelable", f"job {job_id} is already {e.current.value}") from e
    if job is None:
        raise _not_found(job_id)
    return _job_response(job), 202


@bp.get("/<job_id>/result")
def result(job_id: str) -> Response:
    job = _owned(job_id)
    if job.status != JobStatus.SUCCEEDED or job.result is None:
        raise ApiError(409, "job_not_succeeded", f"job {job_id} is {job.status.value}; results exist once it succeeded")
    document = next(f for f in job.result.files if f.name == job.result.document)
    try:
        data = services().objects.get(document.key)
    except ObjectNotFoundError as e:
        raise ApiError(410, "result_expired", f"the result of job {job_id} is no longer stored") from e
    return Response(data, mimetype="application/json")


def _json_body() -> Any:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the job as JSON (Content-Type: application/json)")
    try:
        return json.loads(request.get_data())
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {e}") from e


def _parse_spec(body: Any) -> JobSpec:
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    try:
        return JOB_SPEC.validate_python(body)
    except ValidationError as e:
        tag = body.get("type") if isinstance(body.get("type"), str) else None
        raise ApiError(422, "validation_error", "the job is invalid", validation_details(e, tag)) from e


def _admit(spec: JobSpec) -> JobSpec:
    """Checks that need the server's state; an inline base64 image becomes an upload (messages carry no bytes)."""
    svc = services()
    image = spec.image
    if isinstance(image, Base64Image):
        data = _decode_base64(image.base64, svc.api.max_base64_bytes)
        upload = store_upload(data, "application/octet-stream")
        spec = spec.model_copy(update={"image": UploadImage(upload=upload.id)})
    elif isinstance(image, UploadImage) and svc.uploads.get(image.upload, tenant()) is None:
        raise _invalid("image.upload", f"unknown upload {image.upload}")
    elif isinstance(image, S3Image):
        bucket = image.s3.removeprefix("s3://").split("/", 1)[0]
        if bucket not in svc.storage.readable_buckets:
            raise _invalid(
                "image.s3", f"bucket {bucket!r} is not readable by this server (SAMQ_STORAGE_S3_READ_BUCKETS)"
            )
    if isinstance(spec, SegmentSpec):
        for i, prompt in enumerate(spec.prompts):
            ref = prompt.mask_input
            if ref is not None and svc.jobs.get(ref.job, tenant()) is None:
                raise _invalid(f"prompts.{i}.mask_input.job", f"unknown job {ref.job}")
    return spec


def _decode_base64(text: str, limit: int) -> bytes:
    if len(text) > (limit + 2) // 3 * 4 + 4:
        raise ApiError(
            413, "payload_too_large", f"image.base64 decodes to more than {limit} bytes (SAMQ_API_MAX_BASE64_BYTES)"
        )
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise _invalid("image.base64", f"not valid base64: {e}") from e
    if len(data) > limit:
        raise ApiError(
            413, "payload_too_large", f"image.base64 decodes to more than {limit} bytes (SAMQ_API_MAX_BASE64_BYTES)"
        )
    return data


def _prefer_wait(maximum: int) -> int:
    match = PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return min(int(match.group(1)), maximum) if match else 0


def _owned(job_id: str) -> Job:
    job = services().jobs.get(job_id, tenant())
    if job is None:
        raise _not_found(job_id)
    return job


def _job_response(job: Job) -> Response:
    svc = services()
    return jsonify(job_object(job, svc.objects, svc.storage.presign_seconds).model_dump(mode="json"))


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "job_not_found", f"no job {job_id}")


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "validation_error", message, [{"field": field, "message": message}])
