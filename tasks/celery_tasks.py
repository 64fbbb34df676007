"""The thin Celery tasks: name, queue policy, logging context, then one pipeline call."""

from __future__ import annotations

from celery import shared_task

from tasks.names import DELIVER_WEBHOOK_TASK, PING_TASK, RUN_JOB_TASK
from tasks.pipeline import execute


@shared_task(name=RUN_JOB_TASK, ignore_result=True)
def run_job(job_id: str) -> None:
    """Run one attempt of a job. Failures become job state; only a dead process leaves the message un-acked."""
    from worker.runtime import runtime  # per child process, built on first use (never in the Celery parent)

    execute(job_id, runtime())


@shared_task(name=DELIVER_WEBHOOK_TASK, ignore_result=True)
def deliver_webhook(event_id: str) -> None:
    """One signed POST of one webhook event; the outbox records the attempt and schedules what follows."""
    from worker.runtime import deliverer

    deliverer().deliver(event_id)


@shared_task(name=PING_TASK, ignore_result=False)
def ping() -> str:
    """A no-op round trip: the benchmark's baseline and a liveness probe."""
    return "pong"
