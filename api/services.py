"""What the API talks to, built once per process and passed into the app factory (tests pass their own)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis

from api.limits import RateLimiter
from api.roboflow_memory import RoboflowMemory
from api.settings import ApiSettings
from api.storage_guard import StorageSlots
from storage import make_store
from storage.base import ObjectStore
from storage.settings import StorageSettings
from tasks.batch_store import BatchStore
from tasks.broker import celery_app, connect
from tasks.dispatch import Dispatcher
from tasks.settings import QueueSettings
from tasks.store import JobStore
from tasks.uploads import UploadStore
from tasks.webhooks import WebhookSecrets


@dataclass(frozen=True)
class Services:
    api: ApiSettings
    queue: QueueSettings
    storage: StorageSettings
    redis: redis.Redis
    jobs: JobStore
    batches: BatchStore
    uploads: UploadStore
    objects: ObjectStore
    storage_slots: StorageSlots
    """Bounds the request threads waiting on ``objects`` (``api.storage_guard``)."""
    dispatch: Dispatcher
    waiters: threading.BoundedSemaphore
    """Requests allowed to hold a server thread for ``Prefer: wait`` at once (half the threads)."""
    roboflow_waiters: threading.BoundedSemaphore
    """Roboflow-compatible calls waiting for their jobs at once (their own threads: ``roboflow_max_waiting``)."""
    rate_limiter: RateLimiter
    roboflow: RoboflowMemory
    webhook_secrets: WebhookSecrets


def build_services(
    api: ApiSettings | None = None, queue: QueueSettings | None = None, storage: StorageSettings | None = None
) -> Services:
    api, queue, storage = api or ApiSettings(), queue or QueueSettings(), storage or StorageSettings()
    client = connect(queue)
    return Services(
        api=api,
        queue=queue,
        storage=storage,
        redis=client,
        jobs=JobStore(client, queue),
        batches=BatchStore(client, queue.job_ttl_seconds, queue.lease_seconds),
        uploads=UploadStore(client, queue.job_ttl_seconds),
        objects=make_store(
            storage.model_copy(
                update={
                    "connect_timeout": min(storage.connect_timeout, 2.0),
                    "read_timeout": api.storage_timeout_seconds,
                    "max_retries": 2,
                }
            )
        ),
        storage_slots=StorageSlots(api.storage_slots, wait_seconds=1.0),
        dispatch=Dispatcher(celery_app(queue), queue),
        waiters=threading.BoundedSemaphore(max(1, api.threads // 2)),
        roboflow_waiters=threading.BoundedSemaphore(api.roboflow_max_waiting),
        rate_limiter=RateLimiter(client),
        roboflow=RoboflowMemory(client, api.roboflow_image_id_ttl_seconds),
        webhook_secrets=WebhookSecrets(client, queue.webhook_secret_overlap_seconds),
    )
