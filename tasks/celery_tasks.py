"""The thin Celery tasks: name, queue policy, logging context, then one pipeline call."""

from __future__ import annotations

from celery import shared_task

from tasks.names import DELIVER_WEBHOOK_TASK, FINALIZE_BATCH_TASK, PING_TASK, RUN_JOB_TASK, RUN_SHARD_TASK
from tasks.pipeline import execute


@shared_task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str) -> None:
    """Run one attempt of a job. Failures become job state; only a dead process leaves the message un-acked."""
    from worker.runtime import runtime  # per child process, built on first use (never in the Celery parent)

    execute(job_id, runtime())


@shared_task(name=RUN_SHARD_TASK, ignore_result=True)
def run_shard(job_id: str, shard: int) -> None:
    """Run one shard of a batch's items (``tasks.batch``); the shard completing the batch finalizes it."""
    from tasks.batch import run_shard as run
    from worker.runtime import runtime

    rt = runtime()
    assert rt.batch is not None
    run(job_id, shard, rt, rt.batch)


@shared_task(name=FINALIZE_BATCH_TASK, ignore_result=True)
def finalize_batch(job_id: str) -> None:
    """Finalize a batch whose finalizer was lost (sent by the reconcile pass)."""
    from tasks.batch import finalize
    from worker.runtime import runtime

    rt = runtime()
    assert rt.batch is not None
    finalize(job_id, rt, rt.batch)


@shared_task(name=DELIVER_WEBHOOK_TASK, ignore_result=True)
def deliver_webhook(event_id: str) -> None:
    """One signed POST of one webhook event; the outbox records the attempt and schedules what follows."""
    from worker.runtime import deliverer

    deliverer().deliver(event_id)


@shared_task(name=PING_TASK, ignore_result=False)
def ping() -> str:
    """A no-op round trip: the benchmark's baseline and a liveness probe."""
    return "pong"
