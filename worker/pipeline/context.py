"""What a worker process keeps warm between jobs (``Runtime``), and the ports the pipeline calls through.

``worker.runtime`` builds the real ones from the settings, once per worker child; unit tests pass fakes, which
these protocols type-check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from storage import S3Lister
from tasks.batch_store import BatchStore
from tasks.errors import SamqError
from tasks.jobs import Job, JobResult
from tasks.names import Queue
from tasks.settings import QueueSettings
from tasks.specs import Base64Image, S3Image, UploadImage, UrlImage
from worker.embedding_cache import EmbeddingCache
from worker.pipeline.objects import JobObjects
from worker.pipeline.overlap import ReadAhead, WriteBehind
from worker.runners.concept import ConceptRunner
from worker.runners.image import Embedding, ImageRunner
from worker.runners.video import VideoTracker
from worker.settings import WorkerSettings

if TYPE_CHECKING:  # sam2's import is the runner's to make, when a worker first runs an everything job
    from worker.runners.sam2_everything import Sam2EverythingRunner

PROGRESS_SECONDS = 1.0
"""Least time between two progress updates of a long job (a track job's frames, an everything job's point batches)."""
Checkpoint = Callable[[], None]
"""Raises ``JobCanceledError`` or ``LeaseLostError`` when the work must stop there (``worker.pipeline.lease``)."""
Finish = Callable[[], JobResult]
"""The rest of a job once its model work is done: its result's files encoded and written, its result returned (run
behind the next job's model work: ``worker.pipeline.overlap``); raises what the job ends with."""


class JobRecords(Protocol):
    """The job store as a worker uses it (``tasks.store.JobStore``): every write names the attempt it comes from."""

    def get(self, job_id: str, tenant: str | None = None) -> Job | None: ...

    def start(self, job_id: str, sent: str | None = None) -> Job | None: ...

    def heartbeat(self, job_id: str, attempt: int) -> bool: ...

    def cancel_requested(self, job_id: str) -> bool: ...

    def set_progress(self, job_id: str, attempt: int, done: int, total: int, unit: str) -> Job | None: ...

    def succeed(self, job_id: str, attempt: int, result: JobResult) -> bool: ...

    def fail(self, job_id: str, attempt: int, error: SamqError, result: JobResult | None = None) -> bool: ...

    def cancel_running(self, job_id: str, attempt: int, partial: JobResult | None = None) -> bool: ...

    def requeue(self, job_id: str, attempt: int, error: SamqError, delay: float) -> bool: ...

    def hand_off(self, job_id: str) -> None: ...


class Media(Protocol):
    """Media references → bytes, size- and time-limited (``worker.pipeline.media.MediaSource``)."""

    def fetch(self, ref: UrlImage | Base64Image | UploadImage | S3Image, tenant: str) -> bytes: ...

    def digest(self, ref: UrlImage | Base64Image | UploadImage | S3Image, tenant: str) -> str | None:
        """The SHA-256 of the media's bytes where it is known without reading them (an upload's record), else None."""
        ...


class ModelSource(Protocol):
    """Loaded runners by model id (``worker.registry.ModelRegistry``)."""

    def get(self, model_id: str) -> ImageRunner: ...

    def get_concept(self, model_id: str) -> ConceptRunner: ...

    def get_video(self, model_id: str) -> VideoTracker: ...

    def get_everything(self, model_id: str) -> Sam2EverythingRunner: ...

    def input_size(self, model_id: str, concept: bool = False) -> int | None:
        """The image size a loaded runner (the concept runner: ``concept``) encodes at; None when it is not loaded.
        Never loads one, never reorders: safe from another thread."""
        ...


@dataclass(frozen=True)
class TrackLimits:
    """Worker limits on track jobs and their chunking (``SAMQ_WORKER_MAX_VIDEO_*``, ``…_TRACK_*``)."""

    max_seconds: float
    max_frames: int
    max_pixels: int
    max_objects: int
    chunk_frames: int
    chunk_seconds: float

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> TrackLimits:
        return cls(
            max_seconds=settings.max_video_seconds,
            max_frames=settings.max_video_frames,
            max_pixels=settings.max_video_pixels,
            max_objects=settings.max_track_objects,
            chunk_frames=settings.track_chunk_frames,
            chunk_seconds=settings.track_chunk_seconds,
        )


@dataclass(frozen=True)
class BatchLimits:
    shard_size: int
    """Images per shard unless the batch sets ``shard_size`` (a video is always a shard of its own)."""
    encode_batch: int | None
    """Images of a shard encoded in one call (``set_image_batch``); None: 8 on a GPU, 1 (off) on CPU."""
    max_items: int

    @classmethod
    def from_settings(cls, settings: QueueSettings) -> BatchLimits:
        return cls(
            shard_size=settings.batch_shard_size,
            encode_batch=settings.batch_encode_size,
            max_items=settings.batch_max_items,
        )


@dataclass(frozen=True)
class BatchContext:
    """What batch work needs besides the Runtime: its Redis state, S3 listing and a way to send shards."""

    store: BatchStore
    send_shard: Callable[[str, int, bool], None]
    """``(job_id, shard, videos)``: send one shard's task (``tasks.dispatch.Dispatcher.enqueue_shard``)."""
    list_s3: S3Lister | None
    """None without the s3 storage backend (``s3_prefix`` inputs then fail with ``media_not_found``)."""
    limits: BatchLimits


@dataclass(frozen=True)
class Runtime:
    """Everything a worker process keeps warm between jobs."""

    store: JobRecords
    objects: JobObjects
    media: Media
    models: ModelSource
    embeddings: EmbeddingCache[Embedding]
    batch: BatchContext
    track: TrackLimits
    max_image_pixels: int
    max_attempts: int
    lease_interval: float
    retry_backoff: float
    timeout_error: type[BaseException]
    """The exception a job's soft time limit raises in it (Celery's ``SoftTimeLimitExceeded``)."""
    ahead: ReadAhead
    """Reads started before the job that needs them (``worker.pipeline.overlap``)."""
    behind: WriteBehind
    """Where a job's writes and commit run while the next job computes."""
    upcoming: Callable[[Queue], list[str]]
    """The ids of the jobs next in a queue (``tasks.upcoming``)."""
