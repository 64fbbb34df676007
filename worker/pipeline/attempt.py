"""One attempt of one job, from its record to its outcome.

Celery never appears here: the thin task (``worker.celery_tasks``) hands the process's ``Runtime`` to ``execute``.
Whatever a job does ends as job state (succeeded, failed with an ``error.code``, queued again for a retry,
canceled); ``execute`` itself never raises for it.
"""

from __future__ import annotations

import logging

from tasks.batch_specs import BatchSpec
from tasks.errors import JobTimeoutError, SamqError, TransientError
from tasks.jobs import Job, JobResult
from worker.pipeline.batch.expand import expand
from worker.pipeline.context import Checkpoint, Runtime
from worker.pipeline.lease import JobCanceledError, Lease, LeaseLostError
from worker.pipeline.run import job_error, run

log = logging.getLogger(__name__)


def execute(job_id: str, rt: Runtime) -> None:
    """Run one attempt of ``job_id``. Never raises for anything a job can do: failures become job state."""
    job = rt.store.start(job_id)
    if job is None:
        log.info("job %s: nothing to run (terminal, unknown, or running elsewhere); skipped", job_id)
        return
    attempt = job.attempts
    log.info("job %s: attempt %d started", job_id, attempt)
    handed_off = False
    with Lease.of_attempt(rt.store, job_id, attempt, rt.lease_interval) as lease:
        try:
            result = _attempt(job, rt, lease.checkpoint)
        except JobCanceledError as e:
            rt.store.cancel_running(job_id, attempt, e.partial)
            log.info("job %s: canceled", job_id)
        except LeaseLostError:
            log.warning("job %s: attempt %d was fenced off; its work is discarded", job_id, attempt)
        except rt.timeout_error as e:
            rt.store.fail(job_id, attempt, JobTimeoutError(f"the job ran past its time limit ({e})"))
        except Exception as e:
            _failed(job, job_error(e, f"job {job_id}"), rt)
        else:
            handed_off = result is None
            if result is not None and not rt.store.succeed(job_id, attempt, result):
                log.warning("job %s: attempt %d finished but was fenced off", job_id, attempt)
    if handed_off:  # a fanned-out batch stays running: its shards' reconcile watches it, not the reaper
        rt.store.hand_off(job_id)


def _attempt(job: Job, rt: Runtime, checkpoint: Checkpoint) -> JobResult | None:
    """The job's result; None for a batch, whose attempt only fans out (its shards finish it)."""
    if isinstance(job.spec, BatchSpec):
        expand(job, job.spec, rt, checkpoint)
        return None
    return run(job, rt, checkpoint)


def _failed(job: Job, error: SamqError, rt: Runtime) -> None:
    """A transient error is retried (with backoff) while attempts are left; anything else fails the job."""
    delay = rt.retry_backoff * 2 ** (job.attempts - 1)
    if (
        isinstance(error, TransientError)
        and job.attempts < rt.max_attempts
        and rt.store.requeue(job.id, job.attempts, error, delay)
    ):  # no message waits out the delay: the job store holds it (tasks.retries), any worker sends it when due
        log.warning("job %s: %s (%s); retrying in %.1fs", job.id, error.code, error.message, delay)
        return
    rt.store.fail(job.id, job.attempts, error)
    log.info("job %s: failed with %s: %s", job.id, error.code, error.message)
