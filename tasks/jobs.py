"""The job record and its state machine.

``queued → running → succeeded | failed | canceled`` (and ``queued → canceled``); ``running → queued`` only for a
retry. Terminal states never change again. The transitions are checked here; ``tasks.store`` applies them
atomically in Redis.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.batch_specs import BatchSpec
from tasks.errors import IllegalTransitionError
from tasks.everything_specs import EverythingSpec
from tasks.names import RESULT_DOCUMENT
from tasks.specs import ConceptSpec, EmbedSpec, SegmentSpec
from tasks.track_specs import TrackSpec


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELED: frozenset(),
}


JobSpec = Annotated[
    SegmentSpec | EmbedSpec | ConceptSpec | EverythingSpec | TrackSpec | BatchSpec, Field(discriminator="type")
]
"""Any job's spec, told apart by its ``type``."""


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JobError(Record):
    code: str
    message: str
    retryable: bool = False


class Progress(Record):
    done: int = 0
    total: int = 1
    unit: str = "images"


class ResultFile(Record):
    name: str
    key: str
    bytes: int
    content_type: str


class JobResult(Record):
    files: list[ResultFile]
    summary: dict[str, Any]
    document: str = RESULT_DOCUMENT
    """Name (among ``files``) of the result document that GET /v1/jobs/{id}/result returns."""


class Job(Record):
    """Everything samq knows about a job. The public job object is a view of this (see tasks.views)."""

    id: str
    tenant: str
    type: str
    model: str
    status: JobStatus = JobStatus.QUEUED
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress: Progress = Field(default_factory=Progress)
    result: JobResult | None = None
    error: JobError | None = None
    attempts: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: JobSpec
    cancel_requested: bool = False

    def transition(self, target: JobStatus) -> None:
        """Check (not apply) that ``status → target`` is legal; raises IllegalTransitionError."""
        if target not in ALLOWED[self.status]:
            raise IllegalTransitionError(self.id, self.status, target)


def new_id(prefix: str) -> str:
    """Opaque, sortable-enough, unguessable id with a type prefix (``job_…``, ``upl_…``)."""
    return f"{prefix}_{secrets.token_hex(12)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job(spec: JobSpec, tenant: str, job_id: str | None = None) -> Job:
    return Job(
        id=job_id or new_id("job"),
        tenant=tenant,
        type=spec.type,
        model=spec.model.value,
        created_at=utcnow(),
        metadata=spec.metadata,
        spec=spec,
    )
