"""The worker's Celery app: the shared configuration (``tasks.broker``), the thin tasks, and the housekeeping.

Importing this module loads no model and opens no connection; ``samq worker`` builds the app and runs it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from celery import Celery, bootsteps, signals

from tasks import roster
from tasks.broker import celery_app
from tasks.jobs import JobStatus
from tasks.names import Queue, queue_for
from tasks.orphans import held_since
from worker.pipeline.batch.reconcile import reconcile
from worker.pipeline.context import BatchContext
from worker.pipeline.held import restore_held
from worker.runtime import Settings, WorkerProcess, current, install

log = logging.getLogger(__name__)


def create_celery(settings: Settings | None = None) -> Celery:
    """The app of a worker process configured by ``settings`` (default: read from the environment, once)."""
    settings = settings or Settings.from_env()
    app = celery_app(settings.queue, include=["worker.celery_tasks"])
    install(WorkerProcess(settings, app))
    app.steps["worker"].add(Housekeeper)
    return app


@signals.worker_process_shutdown.connect
def _finish_before_exit(**_: Any) -> None:
    """A pool process that exits (worker shutdown, ``max_memory_per_child``) first finishes the job whose result it is
    still writing; one killed outright leaves it to the reaper (its lease lapses)."""
    try:
        current().drain()
    except Exception:
        log.exception("could not finish the last job before exiting; the reaper runs it again")


class Housekeeper(bootsteps.StartStopStep):
    """Four periodic passes in the worker's main process, on its timer; they only talk to Redis, never to CUDA.

    - Reaping: re-enqueues running jobs whose lease lapsed (their worker was killed) without waiting for Redis's
      visibility timeout; fails them once they are out of attempts. Puts back the messages a lost worker took and
      never began (``worker.pipeline.held``), and sends again queued jobs whose message is gone.
    - Webhooks: claims due outbox events and sends one delivery task each to the ``io`` queue.
    - Batches: ``worker.pipeline.batch.reconcile`` (lost shards, cancels, lost finalizers).
    - Heartbeat: this worker is alive on its queues (``tasks.roster``, the ``samq_workers_alive`` gauge); it leaves
      them when it stops.
    """

    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._trefs: list[Any] = []
        self._process: WorkerProcess | None = None
        self._batches: BatchContext | None = None
        self._name = ""
        self._queues: list[Queue] = []

    def start(self, parent: Any) -> None:
        self._process = process = current()
        self._batches = process.batch_context(list_s3=None)
        settings = process.settings.queue
        self._name = parent.hostname
        self._queues = [queue for queue in Queue if queue.value in parent.app.amqp.queues.consume_from]
        self.beat()
        timer = parent.timer
        self._trefs = [
            timer.call_repeatedly(settings.reap_interval_seconds, self.reap, priority=10),
            timer.call_repeatedly(settings.webhook_poll_seconds, self.dispatch_webhooks, priority=10),
            timer.call_repeatedly(settings.reap_interval_seconds, self.reconcile_batches, priority=10),
            timer.call_repeatedly(settings.reap_interval_seconds, self.beat, priority=10),
        ]

    def stop(self, parent: Any) -> None:
        for tref in self._trefs:
            tref.cancel()
        if self._process is not None:
            try:
                roster.leave(self._process.redis, self._name, self._queues)
            except Exception:
                log.exception("could not leave the worker roster; this worker lapses from it instead")

    def beat(self) -> None:
        assert self._process is not None
        lapse = roster.lapse_seconds(self._process.settings.queue.reap_interval_seconds)
        try:
            roster.beat(self._process.redis, self._name, self._queues, lapse)
        except Exception:
            log.exception("worker heartbeat failed; will retry")

    def reap(self) -> None:
        assert self._process is not None
        jobs = self._process.jobs
        try:
            for job_id in jobs.lapsed():
                job = jobs.reap(job_id)
                if job is not None:
                    log.warning(
                        "job %s: lease lapsed (worker lost); re-enqueued after attempt %d", job_id, job.attempts
                    )
                    self._process.dispatch.enqueue(job)
            for job_id in jobs.retries.claim_due():  # transient failures whose backoff is over
                job = jobs.get(job_id)
                if job is None or job.status != JobStatus.QUEUED:  # expired, or moved on since
                    jobs.retries.discard(job_id)
                    continue
                log.info("job %s: retry due; attempt %d sent", job_id, job.attempts + 1)
                self._process.dispatch.enqueue(job)
            assert self._batches is not None
            after = self._process.settings.queue.orphan_after_seconds
            held = held_since(self._process.redis, after)
            restore_held(held, jobs, self._batches.store, self._process.dispatch.restore)
            self._resend_orphans()
        except Exception:
            log.exception("reaper pass failed; will retry")

    def _resend_orphans(self) -> None:
        """Queued jobs whose message is nowhere in the broker (``tasks.orphans``) are sent again."""
        assert self._process is not None
        jobs, after = self._process.jobs, self._process.settings.queue.orphan_after_seconds
        if not jobs.queued.my_turn(after / 4):
            return
        suspects: list[tuple[str, Queue]] = []
        for job_id in jobs.queued.stale(after):
            job = jobs.get(job_id)
            if job is None or job.status != JobStatus.QUEUED:
                jobs.queued.drop(job_id)
            elif jobs.retries.due_at(job_id) is not None:  # waiting out a backoff: no message, by design
                jobs.queued.looked_at(job_id)
            else:
                suspects.append((job_id, queue_for(job.type, job.model)))
        lost = set(jobs.queued.without_message(suspects)) if suspects else set()
        for job_id, _ in suspects:
            jobs.queued.looked_at(job_id)
            job = jobs.get(job_id) if job_id in lost else None
            if job is not None and job.status == JobStatus.QUEUED:
                log.warning("job %s: queued, but no message for it is left in the broker; sent again", job_id)
                self._process.dispatch.enqueue(job)

    def reconcile_batches(self) -> None:
        """Re-send shards whose worker died, stop canceled batches, finalize batches whose finalizer was lost."""
        assert self._process is not None
        assert self._batches is not None
        try:
            reconcile(self._process.jobs, self._batches, self._process.dispatch.send_finalize)
        except Exception:
            log.exception("batch reconcile pass failed; will retry")

    def dispatch_webhooks(self) -> None:
        """A claimed event whose message is lost (send failure, dead worker) is claimed again when its claim lapses."""
        assert self._process is not None
        try:
            for event_id in self._process.jobs.outbox.claim():
                self._process.dispatch.send_delivery(event_id)
        except Exception:
            log.exception("webhook dispatch pass failed; will retry")
