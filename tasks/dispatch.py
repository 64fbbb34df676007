"""Sending job messages. The message carries the job id only; everything else lives in the job record."""

from __future__ import annotations

from celery import Celery

from tasks.jobs import Job
from tasks.names import (
    DELIVER_WEBHOOK_TASK,
    FINALIZE_BATCH_TASK,
    PING_TASK,
    RUN_JOB_TASK,
    RUN_SHARD_TASK,
    Queue,
    queue_for,
)


def enqueue(app: Celery, job: Job, countdown: float | None = None) -> None:
    """Send ``job``'s message to its queue; ``track`` jobs carry their own (longer) time limits."""
    limits: dict[str, int] = {}
    if job.type == "track":
        soft, hard = app.conf.samq_track_time_limits
        limits = {"soft_time_limit": soft, "time_limit": hard}
    app.send_task(
        RUN_JOB_TASK,
        kwargs={"job_id": job.id},
        queue=queue_for(job.type, job.model).value,
        countdown=countdown,
        **limits,
    )


def enqueue_shard(app: Celery, job_id: str, shard: int, videos: bool) -> None:
    """One shard of a batch on the ``bulk`` queue; shards of videos carry the ``track`` time limits."""
    limits: dict[str, int] = {}
    if videos:
        soft, hard = app.conf.samq_track_time_limits
        limits = {"soft_time_limit": soft, "time_limit": hard}
    app.send_task(RUN_SHARD_TASK, kwargs={"job_id": job_id, "shard": shard}, queue=Queue.BULK.value, **limits)


def send_finalize(app: Celery, job_id: str) -> None:
    """Finalize a batch whose finalizer was lost, on the ``io`` queue (no model needed; never behind a backlog)."""
    app.send_task(FINALIZE_BATCH_TASK, kwargs={"job_id": job_id}, queue=Queue.IO.value)


def send_delivery(app: Celery, event_id: str) -> None:
    """One attempt of one webhook event, on the ``io`` queue (the outbox in Redis holds its schedule)."""
    app.send_task(DELIVER_WEBHOOK_TASK, kwargs={"event_id": event_id}, queue=Queue.IO.value)


def ping(app: Celery, queue: Queue, timeout: float) -> str:
    """A bare Celery round trip on ``queue`` (the benchmark's baseline)."""
    result: str = app.send_task(PING_TASK, queue=queue.value).get(timeout=timeout)
    return result
