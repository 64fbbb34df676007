"""The public job object (API.md), rendered from a job record: what GET /v1/jobs/{id} answers and what webhook
events carry. Result URLs are presigned at render time, never stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer

from storage.base import ObjectStore
from tasks.jobs import Job, JobError, JobStatus, Progress
from tasks.specs import Webhook

Timestamp = Annotated[datetime, PlainSerializer(lambda d: d.isoformat().replace("+00:00", "Z"), return_type=str)]


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class FileView(View):
    name: str
    url: str
    bytes: int


class ResultView(View):
    url: str | None
    expires_at: Timestamp | None
    files: list[FileView]
    summary: dict[str, Any]


class JobObject(View):
    id: str
    type: str
    status: JobStatus
    model: str
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    progress: Progress
    result: ResultView | None
    error: JobError | None
    attempts: int
    cancel_requested: bool
    webhook: Webhook | None
    metadata: dict[str, Any]
    view: str
    """The job's page in the results viewer, relative to the API's address (like ``Location``)."""


def job_object(job: Job, objects: ObjectStore, presign_seconds: int) -> JobObject:
    result = None
    if job.result is not None:
        signed = {f.name: objects.presign_get(f.key, presign_seconds) for f in job.result.files}
        document = signed.get(job.result.document)
        result = ResultView(
            url=document.url if document else None,
            expires_at=document.expires_at if document else None,
            files=[FileView(name=f.name, url=signed[f.name].url, bytes=f.bytes) for f in job.result.files],
            summary=job.result.summary,
        )
    return JobObject(
        id=job.id,
        type=job.type,
        status=job.status,
        model=job.model,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        progress=job.progress,
        result=result,
        error=job.error,
        attempts=job.attempts,
        cancel_requested=job.cancel_requested,
        webhook=job.spec.webhook,
        metadata=job.metadata,
        view=f"/view/jobs/{job.id}",
    )
