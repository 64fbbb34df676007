"""Reaching the broker: the Redis client of the stores and the Celery app, configured once for both sides.

The API builds the app to send messages (``celery_app(settings)``); a worker builds the same app with its task
module included (``worker.celery_app``). The settings here are the ones that keep Celery + Redis + GPUs correct
(see ARCHITECTURE.md). Nothing connects until used.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from celery import Celery
from kombu.entity import Queue as KombuQueue
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tasks.names import Queue
from tasks.settings import QueueSettings


def connect(settings: QueueSettings) -> redis.Redis:
    """The Redis client the stores expect (strings in and out, bounded waits)."""
    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=30,
        # A restarted or failed-over Redis drops pooled connections: reconnect rather than fail the request.
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[redis.ConnectionError],
    )


def celery_app(settings: QueueSettings, include: Sequence[str] = ()) -> Celery:
    """The Celery app both sides share; ``include`` names the task modules a worker registers."""
    # Redis redelivers un-acked messages after visibility_timeout even while they run: keep it well above the
    # longest hard time limit. Dead workers are detected much sooner by job leases (the worker's housekeeping).
    longest = max(settings.hard_time_limit_seconds, settings.track_hard_time_limit_seconds)
    visibility = {"visibility_timeout": longest * 2 + 600}
    app = Celery("samq", broker=settings.redis_url, backend=settings.redis_url, include=list(include))
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
        broker_transport_options=visibility,
        result_backend_transport_options=visibility,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker that loses Redis keeps reconnecting (Celery stops at 100)
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_queues=[KombuQueue(q.value) for q in Queue],
        task_default_queue=Queue.INTERACTIVE.value,
        worker_hijack_root_logger=False,
    )
    return app
