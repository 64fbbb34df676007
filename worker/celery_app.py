"""The Celery app factory: the settings that keep Celery + Redis + GPUs correct (see ARCHITECTURE.md).

Importing this module loads no model and opens no connection; ``samq worker`` builds the app and runs it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from celery import Celery, bootsteps
from kombu.entity import Queue as KombuQueue

from tasks.batch_store import BatchContext, batch_context, reconcile
from tasks.dispatch import enqueue, send_delivery, send_finalize
from tasks.names import Queue
from tasks.settings import QueueSettings
from tasks.store import JobStore, connect

log = logging.getLogger(__name__)


def create_celery(settings: QueueSettings | None = None) -> Celery:
    settings = settings or QueueSettings()
    # Redis redelivers un-acked messages after visibility_timeout even while they run: keep it well above the
    # hard time limit. Dead workers are detected much sooner by job leases (see Housekeeper).
    longest = max(settings.hard_time_limit_seconds, settings.track_hard_time_limit_seconds)
    visibility = {"visibility_timeout": longest * 2 + 600}
    app = Celery("samq", broker=settings.redis_url, backend=settings.redis_url, include=["tasks.celery_tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # job state lives in the job store; only the ping task stores a result
        result_expires=300,
        task_acks_late=True,
        task_reject_on_worker_lost=True,  # our attempt cap (JobStore.start) stops poison jobs from looping
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.soft_time_limit_seconds,
        task_time_limit=settings.hard_time_limit_seconds,
        samq_track_time_limits=(settings.track_soft_time_limit_seconds, settings.track_hard_time_limit_seconds),
        broker_transport_options=visibility,
        result_backend_transport_options=visibility,
        broker_connection_retry_on_startup=True,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_queues=[KombuQueue(q.value) for q in Queue],
        task_default_queue=Queue.INTERACTIVE.value,
        worker_hijack_root_logger=False,
        samq_settings=settings,
    )
    app.steps["worker"].add(Housekeeper)
    return app


class Housekeeper(bootsteps.StartStopStep):
    """Three periodic passes in the worker's main process, on its timer; they only talk to Redis, never to CUDA.

    - Reaping: re-enqueues running jobs whose lease lapsed (their worker was killed) without waiting for Redis's
      visibility timeout; fails them once they are out of attempts.
    - Webhooks: claims due outbox events and sends one delivery task each to the ``io`` queue.
    - Batches: ``tasks.batch.reconcile`` (lost shards, cancels, lost finalizers).
    """

    requires: ClassVar[set[str]] = {"celery.worker.components:Timer"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._trefs: list[Any] = []
        self._store: JobStore | None = None
        self._batches: BatchContext | None = None

    def start(self, parent: Any) -> None:
        settings: QueueSettings = parent.app.conf.samq_settings
        client = connect(settings)
        self._store = JobStore(client, settings)
        self._batches = batch_context(parent.app, settings, client, list_s3=None)
        timer = parent.timer
        self._trefs = [
            timer.call_repeatedly(settings.reap_interval_seconds, self.reap, (parent.app,), priority=10),
            timer.call_repeatedly(settings.webhook_poll_seconds, self.dispatch_webhooks, (parent.app,), priority=10),
            timer.call_repeatedly(settings.reap_interval_seconds, self.reconcile_batches, (parent.app,), priority=10),
        ]

    def stop(self, parent: Any) -> None:
        for tref in self._trefs:
            tref.cancel()

    def reap(self, app: Celery) -> None:
        assert self._store is not None
        try:
            for job_id in self._store.lapsed():
                job = self._store.reap(job_id)
                if job is not None:
                    log.warning(
                        "job %s: lease lapsed (worker lost); re-enqueued after attempt %d", job_id, job.attempts
                    )
                    enqueue(app, job)
        except Exception:
            log.exception("reaper pass failed; will retry")

    def reconcile_batches(self, app: Celery) -> None:
        """Re-send shards whose worker died, stop canceled batches, finalize batches whose finalizer was lost."""
        assert self._store is not None
        assert self._batches is not None
        try:
            reconcile(self._store, self._batches, lambda job_id: send_finalize(app, job_id))
        except Exception:
            log.exception("batch reconcile pass failed; will retry")

    def dispatch_webhooks(self, app: Celery) -> None:
        """A claimed event whose message is lost (send failure, dead worker) is claimed again when its claim lapses."""
        assert self._store is not None
        try:
            for event_id in self._store.outbox.claim():
                send_delivery(app, event_id)
        except Exception:
            log.exception("webhook dispatch pass failed; will retry")
