"""A worker process and what it builds from its settings: read once by ``samq worker`` (``worker.celery_app``),
passed in here, never re-read from the environment.

The ``Runtime`` (models, caches, clients) is built lazily in the pool child on its first job, never in the Celery
parent (no CUDA before fork), then kept warm. The parent builds only what its housekeeping timer needs (Redis).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import redis
from celery import Celery
from celery.exceptions import SoftTimeLimitExceeded

from storage import S3Lister, Storage, open_storage
from storage.settings import StorageSettings
from tasks.batch_store import BatchStore
from tasks.broker import connect
from tasks.dispatch import Dispatcher
from tasks.settings import QueueSettings
from tasks.store import JobStore
from tasks.upcoming import upcoming_jobs
from tasks.uploads import UploadStore
from tasks.webhooks import Outbox, WebhookSecrets
from worker.embedding_cache import EmbeddingCache
from worker.pipeline.context import BatchContext, BatchLimits, Runtime, TrackLimits
from worker.pipeline.media import MediaSource
from worker.pipeline.objects import JobObjects
from worker.pipeline.overlap import READ_AHEAD_CAPACITY, ReadAhead, WriteBehind
from worker.registry import ModelRegistry
from worker.settings import WorkerSettings
from worker.webhooks import Deliverer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Everything a worker process is configured by."""

    queue: QueueSettings
    storage: StorageSettings
    worker: WorkerSettings

    @classmethod
    def from_env(cls) -> Settings:
        return cls(QueueSettings(), StorageSettings(), WorkerSettings())


class WorkerProcess:
    """One worker process (the Celery parent, and after fork each pool child): its settings, the app it sends
    messages with, and what it builds from them on first use."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.dispatch = Dispatcher(app, settings.queue)

    @functools.cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings.queue)

    @functools.cached_property
    def storage(self) -> Storage:
        """One S3 client (one pool of kept-alive connections) for everything this process reads and writes: jobs,
        ``s3://`` media and webhook deliveries alike. Built in the pool child, like the runtime."""
        return open_storage(self.settings.storage)

    @functools.cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.redis, self.settings.queue)

    def batch_context(self, list_s3: S3Lister | None) -> BatchContext:
        """Batch work's context; ``list_s3`` None where no batch expands (the housekeeping timer)."""
        queue = self.settings.queue
        return BatchContext(
            store=BatchStore(self.redis, queue.job_ttl_seconds, queue.lease_seconds),
            send_shard=self.dispatch.enqueue_shard,
            list_s3=list_s3,
            limits=BatchLimits.from_settings(queue),
        )

    @functools.cached_property
    def runtime(self) -> Runtime:
        """What jobs run with: built on this child's first job, then kept warm."""
        queue, worker = self.settings.queue, self.settings.worker
        if worker.torch_threads:
            import torch  # the pipeline imported it already; this only sets the pool child's thread count

            torch.set_num_threads(worker.torch_threads)
        objects = JobObjects(self.storage.objects, worker.storage_outage_seconds)

        log.info(
            "worker runtime: device=%s random_weights=%s image_size=%s",
            worker.device,
            worker.random_weights,
            worker.image_size,
        )
        return Runtime(
            store=self.jobs,
            objects=objects,
            media=MediaSource(
                objects,
                self.storage.read_s3,
                max_bytes=worker.max_media_bytes,
                timeout=worker.fetch_timeout_seconds,
                total_seconds=worker.fetch_total_seconds,
                allowed_networks=queue.allowed_networks,
                uploads=UploadStore(self.redis, queue.job_ttl_seconds),
            ),
            models=ModelRegistry(worker),
            embeddings=EmbeddingCache(worker.embedding_cache_bytes),
            batch=self.batch_context(self.storage.list_s3),
            track=TrackLimits.from_settings(worker),
            max_image_pixels=queue.max_image_pixels,
            max_attempts=queue.max_attempts,
            lease_interval=queue.lease_seconds / 3,
            retry_backoff=queue.retry_backoff_seconds,
            timeout_error=SoftTimeLimitExceeded,
            ahead=ReadAhead(objects.start, capacity=READ_AHEAD_CAPACITY if worker.overlap else 0),
            behind=WriteBehind(inline=not worker.overlap),
            upcoming=functools.partial(upcoming_jobs, self.redis) if worker.overlap else lambda queue: [],
        )

    def drain(self) -> None:
        """Finish what runs behind the model (``worker.pipeline.overlap``) before this process exits; nothing where
        no job ran."""
        if "runtime" in self.__dict__:
            self.runtime.behind.drain()

    @functools.cached_property
    def deliverer(self) -> Deliverer:
        """Webhook delivery needs no model: only Redis, the object store (to presign result URLs) and HTTP."""
        queue = self.settings.queue
        return Deliverer(
            outbox=Outbox(self.redis, queue),
            secrets=WebhookSecrets(self.redis, queue.webhook_secret_overlap_seconds),
            objects=self.storage.objects,
            settings=queue,
            presign_seconds=self.settings.storage.presign_seconds,
        )


_installed: dict[str, WorkerProcess] = {}


def install(process: WorkerProcess) -> None:
    """Make ``process`` the one this interpreter serves (``worker.celery_app.create_celery`` calls it)."""
    _installed["process"] = process


def current() -> WorkerProcess:
    """The process installed by ``create_celery``; its pool children inherit it."""
    try:
        return _installed["process"]
    except KeyError:
        raise RuntimeError(
            "no worker process installed: build the app with worker.celery_app.create_celery()"
        ) from None
