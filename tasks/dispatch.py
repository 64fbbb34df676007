"""Sending messages. A job's message carries its id and, when short, a copy of its record as sent: the worker's
start tries the change on that copy instead of reading the record first (``JobStore.start``). The job store stays the
truth: a copy that is not the stored record any more (the job was canceled, reaped, retried since) is not used."""

from __future__ import annotations

from dataclasses import dataclass

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
from tasks.settings import QueueSettings

CARRIED_RECORD_CHARS = 16 * 1024
"""A job message carries the record when it is at most this long (a spec with an inline base64 image is not carried)."""


@dataclass(frozen=True)
class Dispatcher:
    """Every message samq sends, on the app of ``tasks.broker.celery_app``; ``settings`` gives the time limits.

    ``ignore_result=True`` on every task but the ping: Celery would otherwise subscribe the sender to each task's
    result channel (and unsubscribe when the result object goes), two Redis round trips per message for results
    that never come."""

    app: Celery
    settings: QueueSettings

    def enqueue(self, job: Job) -> None:
        """Send ``job``'s message to its queue; ``track`` jobs carry their own (longer) time limits. Never with a
        countdown: a delayed message would wait in one worker's hands (``tasks.retries`` holds delays instead)."""
        record = job.model_dump_json()  # as the store wrote it: the same job, the same JSON
        kwargs = {"job_id": job.id, **({"record": record} if len(record) <= CARRIED_RECORD_CHARS else {})}
        self.app.send_task(
            RUN_JOB_TASK,
            kwargs=kwargs,
            queue=queue_for(job.type, job.model).value,
            ignore_result=True,
            **self._limits(job.type == "track"),
        )

    def enqueue_shard(self, job_id: str, shard: int, videos: bool) -> None:
        """One shard of a batch on the ``bulk`` queue; shards of videos carry the ``track`` time limits."""
        self.app.send_task(
            RUN_SHARD_TASK,
            kwargs={"job_id": job_id, "shard": shard},
            queue=Queue.BULK.value,
            ignore_result=True,
            **self._limits(videos),
        )

    def send_finalize(self, job_id: str) -> None:
        """Finalize a batch whose finalizer was lost, on the ``io`` queue (no model needed; never behind a
        backlog)."""
        self.app.send_task(FINALIZE_BATCH_TASK, kwargs={"job_id": job_id}, queue=Queue.IO.value, ignore_result=True)

    def send_delivery(self, event_id: str) -> None:
        """One attempt of one webhook event, on the ``io`` queue (the outbox in Redis holds its schedule)."""
        self.app.send_task(
            DELIVER_WEBHOOK_TASK, kwargs={"event_id": event_id}, queue=Queue.IO.value, ignore_result=True
        )

    def restore(self, tag: str) -> None:
        """Put a message a worker took but never acknowledged back in its queue, by its delivery tag: the broker's
        own restore (kombu's, as at the visibility timeout), atomic, so of workers racing to restore it one does."""
        with self.app.connection_for_write() as connection:
            connection.default_channel.qos.restore_by_tag(tag)

    def ping(self, queue: Queue, timeout: float) -> str:
        """A bare Celery round trip on ``queue`` (the benchmark's baseline)."""
        result: str = self.app.send_task(PING_TASK, queue=queue.value).get(timeout=timeout)
        return result

    def _limits(self, track: bool) -> dict[str, int]:
        """Video work runs under the ``track`` time limits; everything else under the app's defaults."""
        if not track:
            return {}
        return {
            "soft_time_limit": self.settings.track_soft_time_limit_seconds,
            "time_limit": self.settings.track_hard_time_limit_seconds,
        }
