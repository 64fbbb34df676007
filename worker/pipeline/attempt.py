"""One attempt of one job, from its record to its outcome.

Celery never appears here: the thin task (``worker.celery_tasks``) hands the process's ``Runtime`` to ``execute``.
Whatever a job does ends as job state (succeeded, failed with an ``error.code``, queued again for a retry,
canceled); ``execute`` itself never raises for it.

The model work runs in ``execute``. When another job waits in the queue, the result's files are written and the
outcome committed behind it (``worker.pipeline.overlap``) while the task returns and that job computes, the attempt's
lease renewed until the commit; when none waits there is nothing to overlap, and the job finishes here (a thread
hop less on its latency).
"""

from __future__ import annotations

import logging
import time

from tasks.batch_specs import BatchSpec
from tasks.errors import JobTimeoutError, SamqError, TransientError
from tasks.jobs import Job, JobStatus
from tasks.names import queue_for
from worker.pipeline.batch.expand import expand
from worker.pipeline.context import Finish, Runtime
from worker.pipeline.images import read_ahead
from worker.pipeline.lease import JobCanceledError, Lease, LeaseLostError
from worker.pipeline.run import job_error, run

log = logging.getLogger(__name__)


def execute(job_id: str, rt: Runtime, record: str | None = None) -> None:
    """Run one attempt of ``job_id`` (``record``: its record as its message carried it). Never raises for anything a
    job can do: failures become job state."""
    read_at = time.monotonic()
    job = rt.store.start(job_id, record)
    if job is None:
        log.info("job %s: nothing to run (terminal, unknown, or running elsewhere); skipped", job_id)
        return
    log.info("job %s: attempt %d started", job_id, job.attempts)
    rt.objects.start(lambda: _look_ahead(job, rt))
    lease = Lease.of_attempt(rt.store, job, rt.lease_interval, read_at).start()
    try:
        if isinstance(job.spec, BatchSpec):  # its attempt only fans out; its shards finish it
            expand(job, job.spec, rt, lease.checkpoint)
            finish = None
        else:
            finish = run(job, rt, lease.checkpoint)
    except Exception as e:
        lease.stop()
        _ended(job, e, rt)
        return
    except BaseException:
        lease.stop()
        raise
    if finish is None:  # a fanned-out batch stays running: its shards' reconcile watches it, not the reaper
        lease.stop()
        rt.store.hand_off(job_id)
        return
    if _another_waits(job, rt):
        rt.behind.submit(lambda: _finish(job, finish, lease, rt))
    else:
        _finish(job, finish, lease, rt)


def _finish(job: Job, finish: Finish, lease: Lease, rt: Runtime) -> None:
    """Write the result (``finish``) and commit it, under the attempt's lease (stopped after)."""
    with lease:
        try:
            result = finish()
        except Exception as e:
            _ended(job, e, rt)
            return
        if not rt.store.succeed(job.id, job.attempts, result):
            log.warning("job %s: attempt %d finished but was fenced off", job.id, job.attempts)


def _ended(job: Job, error: Exception, rt: Runtime) -> None:
    """What the attempt ends with when it raised ``error``."""
    if isinstance(error, JobCanceledError):
        rt.store.cancel_running(job.id, job.attempts, error.partial)
        log.info("job %s: canceled", job.id)
    elif isinstance(error, LeaseLostError):
        log.warning("job %s: attempt %d was fenced off; its work is discarded", job.id, job.attempts)
    elif isinstance(error, rt.timeout_error):
        rt.store.fail(job.id, job.attempts, JobTimeoutError(f"the job ran past its time limit ({error})"))
    else:
        _failed(job, job_error(error, f"job {job.id}"), rt)


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


def _another_waits(job: Job, rt: Runtime) -> bool:
    """Whether a job waits in this one's queue (then this one finishes behind it); False when Redis cannot say."""
    try:
        return bool(rt.upcoming(queue_for(job.type, job.model)))
    except Exception:
        log.warning("job %s: could not peek at its queue; finishing in place", job.id, exc_info=True)
        return False


def _look_ahead(job: Job, rt: Runtime) -> None:
    """Start the reads of the job next in this one's queue, which this process will likely run next (unless it is on
    this job's image: this job's embedding serves it). Best effort: a look-ahead that fails only costs its time."""
    try:
        for upcoming_id in rt.upcoming(queue_for(job.type, job.model)):
            upcoming = rt.store.get(upcoming_id)
            if upcoming is None or upcoming.status != JobStatus.QUEUED:
                continue
            if upcoming.tenant == job.tenant and getattr(upcoming.spec, "image", None) == getattr(job.spec, "image", 0):
                continue
            read_ahead(upcoming, rt)
    except Exception:
        log.warning("job %s: reading ahead for the next job failed; it reads for itself", job.id, exc_info=True)
