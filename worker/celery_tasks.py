"""The thin Celery tasks: name, queue policy, then one pipeline call with this process's runtime."""

from __future__ import annotations

from celery import shared_task

from tasks.names import DELIVER_WEBHOOK_TASK, FINALIZE_BATCH_TASK, PING_TASK, RUN_JOB_TASK, RUN_SHARD_TASK
from worker.pipeline.attempt import execute
from worker.pipeline.batch.finalize import finalize
from worker.pipeline.batch.shard import run_shard as run_batch_shard
from worker.runtime import current


@shared_task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str, record: str | None = None) -> None:
    """Run one attempt of a job (``record``: the job's record as sent, if the message carries it). Failures become
    job state; only a dead process leaves the message un-acked."""
    execute(job_id, current().runtime, record)


@shared_task(name=RUN_SHARD_TASK, ignore_result=True)
def run_shard(job_id: str, shard: int) -> None:
    """Run one shard of a batch's items; the shard completing the batch finalizes it."""
    run_batch_shard(job_id, shard, current().runtime)


@shared_task(name=FINALIZE_BATCH_TASK, ignore_result=True)
def finalize_batch(job_id: str) -> None:
    """Finalize a batch whose finalizer was lost (sent by the reconcile pass)."""
    finalize(job_id, current().runtime)


@shared_task(name=DELIVER_WEBHOOK_TASK, ignore_result=True)
def deliver_webhook(event_id: str) -> None:
    """One signed POST of one webhook event; the outbox records the attempt and schedules what follows."""
    current().deliverer.deliver(event_id)


@shared_task(name=PING_TASK, ignore_result=False)
def ping() -> str:
    """A no-op round trip: the benchmark's baseline and a liveness probe."""
    return "pong"
