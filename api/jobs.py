"""Job routes: submit, read, list, cancel, and the result document."""

from __future__ import annotations

import re
from typing import Annotated

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.admission import idempotency_of, json_body, parse_spec, submit_job
from api.context import services, tenant
from api.errors import ApiError
from api.views import DeliveryList, JobList
from storage.base import ObjectNotFoundError
from tasks.cursors import CURSOR_PATTERN
from tasks.jobs import Job, JobStatus, new_id
from tasks.specs import validation_details
from tasks.views import job_object

bp = Blueprint("jobs", __name__, url_prefix="/v1/jobs")
PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=(\d+)")


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    status: JobStatus | None = None
    type: str | None = None
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: Annotated[str, Field(pattern=CURSOR_PATTERN, max_length=41)] | None = None


@bp.post("")
def submit() -> tuple[Response, int] | tuple[Response, int, dict[str, str]]:
    body = json_body()
    spec = parse_spec(body)
    svc = services()
    wait = _prefer_wait(svc.api.max_wait_seconds)
    if not (wait and svc.waiters.acquire(blocking=False)):  # else answer 202 at once: waits never starve the server
        return _submitted(*submit_job(spec, idempotency_of(body)))
    try:
        job_id = new_id("job")
        with svc.jobs.watching(job_id) as watch:  # before the job exists: its end cannot be missed, nor read first
            job, replayed = submit_job(spec, idempotency_of(body), job_id)
            if replayed:
                return _submitted(job, replayed)
            finished = watch.wait(wait, known=job)
    finally:
        svc.waiters.release()
    if finished is not None and finished.status.is_terminal:
        return _job_response(finished), 200
    return _submitted(finished or job, False)  # the latest state (e.g. running) beats the one we created


def _submitted(job: Job, replayed: bool) -> tuple[Response, int, dict[str, str]]:
    if replayed:
        return _job_response(job), 200, {"Idempotent-Replayed": "true", "Location": f"/v1/jobs/{job.id}"}
    return _job_response(job), 202, {"Location": f"/v1/jobs/{job.id}"}


@bp.get("")
def list_jobs() -> Response:
    try:
        query = ListQuery.model_validate(request.args.to_dict())
    except ValidationError as e:
        raise ApiError(422, "validation_error", "invalid query parameters", validation_details(e)) from e
    svc = services()
    jobs, cursor = svc.jobs.list_jobs(
        tenant(), status=query.status, job_type=query.type, limit=query.limit, cursor=query.cursor
    )
    presign = svc.storage.presign_seconds
    page = JobList(data=[job_object(job, svc.objects, presign) for job in jobs], next_cursor=cursor)
    return jsonify(page.model_dump(mode="json"))


@bp.get("/<job_id>")
def get_job(job_id: str) -> Response:
    return _job_response(_owned(job_id))


@bp.post("/<job_id>/cancel")
def cancel(job_id: str) -> tuple[Response, int]:
    job = services().jobs.request_cancel(job_id, tenant())
    if job is None:
        raise _not_found(job_id)
    return _job_response(job), 202


@bp.get("/<job_id>/deliveries")
def deliveries(job_id: str) -> Response:
    """Every webhook delivery attempt of the job's events, oldest first."""
    _owned(job_id)
    attempts = services().jobs.outbox.deliveries(job_id)
    return jsonify(DeliveryList(data=attempts).model_dump(mode="json"))


@bp.get("/<job_id>/result")
def result(job_id: str) -> Response:
    job = _owned(job_id)
    if job.result is None:  # a canceled video job keeps the frames it finished as a (partial) result
        raise ApiError(409, "job_not_succeeded", f"job {job_id} is {job.status.value}; results exist once it succeeded")
    document = next(f for f in job.result.files if f.name == job.result.document)
    try:
        data = _stored(document.key)
    except ObjectNotFoundError as e:
        raise ApiError(410, "result_expired", f"the result of job {job_id} is no longer stored") from e
    return Response(data, mimetype="application/json")


@bp.get("/<job_id>/items/<int:index>")
def item_result(job_id: str, index: int) -> Response:
    """One batch item's result document (``jobs/{id}/items/{index}/…``), as soon as the item is done."""
    job = _owned(job_id)
    if job.type != "batch":
        raise ApiError(404, "item_not_found", f"job {job_id} is a {job.type} job; only batch jobs have items")
    record = services().batches.item(job_id, index)
    if record is None:
        progress = job.progress
        if job.status == JobStatus.QUEUED or index < progress.total:
            raise ApiError(
                409, "item_not_done", f"item {index} of job {job_id} has no outcome yet ({job.status.value})"
            )
        raise ApiError(404, "item_not_found", f"job {job_id} has no item {index} (it has {progress.total})")
    if record.error is not None:
        error = record.error
        raise ApiError(409, "item_failed", f"item {index} failed: {error.code}: {error.message}", [error.model_dump()])
    try:
        data = _stored(record.document_key)
    except ObjectNotFoundError as e:
        raise ApiError(410, "result_expired", f"the result of item {index} is no longer stored") from e
    return Response(data, mimetype="application/json")


def _stored(key: str) -> bytes:
    svc = services()
    return svc.storage_slots.call(lambda: svc.objects.get(key))


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
