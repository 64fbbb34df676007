"""The per-process runtime: built lazily in the worker child on its first job, then kept warm."""

from __future__ import annotations

import functools
import logging

from celery import current_app
from celery.exceptions import SoftTimeLimitExceeded

from storage import make_s3_lister, make_s3_reader, make_store
from storage.settings import StorageSettings
from tasks.batch_store import batch_context
from tasks.dispatch import enqueue
from tasks.jobs import Job
from tasks.media import MediaSource
from tasks.pipeline import Runtime
from tasks.settings import QueueSettings
from tasks.store import JobStore, connect
from tasks.tracking import TrackLimits
from tasks.webhooks import Deliverer, Outbox, WebhookSecrets
from worker.embedding_cache import EmbeddingCache
from worker.registry import ModelRegistry
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


@functools.cache
def runtime() -> Runtime:
    queue, storage, worker = QueueSettings(), StorageSettings(), WorkerSettings()
    if worker.torch_threads:
        import torch

        torch.set_num_threads(worker.torch_threads)
    objects = make_store(storage)
    client = connect(queue)
    app = current_app._get_current_object()

    def resend(job: Job, delay: float) -> None:
        enqueue(app, job, countdown=delay)

    log.info(
        "worker runtime: device=%s random_weights=%s image_size=%s",
        worker.device,
        worker.random_weights,
        worker.image_size,
    )
    return Runtime(
        store=JobStore(client, queue),
        objects=objects,
        media=MediaSource(
            objects,
            make_s3_reader(storage),
            max_bytes=worker.max_media_bytes,
            timeout=worker.fetch_timeout_seconds,
            total_seconds=worker.fetch_total_seconds,
            allowed_networks=queue.allowed_networks,
        ),
        models=ModelRegistry(worker),
        embeddings=EmbeddingCache(worker.embedding_cache_bytes),
        resend=resend,
        max_image_pixels=worker.max_image_pixels,
        max_attempts=queue.max_attempts,
        lease_interval=queue.lease_seconds / 3,
        retry_backoff=queue.retry_backoff_seconds,
        timeout_error=SoftTimeLimitExceeded,
        batch=batch_context(app, queue, client, make_s3_lister(storage)),
        track=TrackLimits(
            max_seconds=worker.max_video_seconds,
            max_frames=worker.max_video_frames,
            max_pixels=worker.max_video_pixels,
            max_objects=worker.max_track_objects,
            chunk_frames=worker.track_chunk_frames,
            chunk_seconds=worker.track_chunk_seconds,
        ),
    )


@functools.cache
def deliverer() -> Deliverer:
    """Webhook delivery needs no model: only Redis, the object store (to presign result URLs) and HTTP."""
    queue, storage = QueueSettings(), StorageSettings()
    client = connect(queue)
    return Deliverer(
        outbox=Outbox(client, queue),
        secrets=WebhookSecrets(client, queue.webhook_secret_overlap_seconds),
        objects=make_store(storage),
        settings=queue,
        presign_seconds=storage.presign_seconds,
    )
