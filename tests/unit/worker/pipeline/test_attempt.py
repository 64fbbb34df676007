"""One attempt's outcome handling (``worker.pipeline.attempt``), with fakes for every port (no Redis, no model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import redis

from storage.local import LocalStore
from tasks.batch_store import BatchStore
from tasks.errors import MediaFetchError, SamqError, UnsupportedMediaError
from tasks.jobs import Job, JobResult, JobStatus, new_job
from tasks.settings import QueueSettings
from tasks.specs import Base64Image, S3Image, SegmentSpec, UploadImage, UrlImage
from tests.support.images import png_bytes, scene
from worker.embedding_cache import EmbeddingCache
from worker.pipeline.attempt import execute
from worker.pipeline.context import BatchContext, BatchLimits, Runtime, TrackLimits
from worker.pipeline.objects import JobObjects
from worker.pipeline.overlap import ReadAhead, WriteBehind
from worker.results import InstanceMasks
from worker.runners.concept import ConceptRunner
from worker.runners.image import ImageEmbedding, ImageRunner, VisualPrompt
from worker.runners.sam2_everything import Sam2EverythingRunner
from worker.runners.video import VideoTracker
from worker.settings import WorkerSettings

SPEC = SegmentSpec.model_validate(
    {"type": "segment", "image": {"upload": "upl_x"}, "prompts": [{"points": [{"x": 1, "y": 1}]}]}
)


@dataclass
class FakeStore:
    """The job store's worker side (``JobRecords``), in memory; records every outcome call."""

    job: Job
    calls: list[tuple[str, object]] = field(default_factory=list)
    cancel: bool = False
    delays: list[float] = field(default_factory=list)
    """The retry delays ``requeue`` was given."""

    def get(self, job_id: str, tenant: str | None = None) -> Job | None:
        return self.job

    def start(self, job_id: str, sent: str | None = None) -> Job | None:
        if self.job.status.is_terminal:
            return None
        self.job.status, self.job.attempts = JobStatus.RUNNING, self.job.attempts + 1
        self.job.cancel_requested = self.cancel  # the record says so too, as JobStore's does
        return self.job

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        return True

    def cancel_requested(self, job_id: str) -> bool:
        return self.cancel

    def set_progress(self, job_id: str, attempt: int, done: int, total: int, unit: str) -> Job | None:
        return self.job

    def succeed(self, job_id: str, attempt: int, result: JobResult) -> bool:
        self.calls.append(("succeed", result))
        return True

    def fail(self, job_id: str, attempt: int, error: SamqError, result: JobResult | None = None) -> bool:
        self.job.status = JobStatus.FAILED
        self.calls.append(("fail", error))
        return True

    def cancel_running(self, job_id: str, attempt: int, partial: JobResult | None = None) -> bool:
        self.calls.append(("cancel", attempt))
        return True

    def requeue(self, job_id: str, attempt: int, error: SamqError, delay: float) -> bool:
        self.job.status = JobStatus.QUEUED
        self.calls.append(("requeue", error))
        self.delays.append(delay)
        return True

    def hand_off(self, job_id: str) -> None:
        self.calls.append(("hand_off", job_id))


class RaisingMedia:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def fetch(self, ref: UrlImage | Base64Image | UploadImage | S3Image, tenant: str) -> bytes:
        raise self.error

    def digest(self, ref: UrlImage | Base64Image | UploadImage | S3Image, tenant: str) -> str | None:
        return None


class SceneMedia:
    def fetch(self, ref: UrlImage | Base64Image | UploadImage | S3Image, tenant: str) -> bytes:
        return png_bytes(scene())

    def digest(self, ref: UrlImage | Base64Image | UploadImage | S3Image, tenant: str) -> str | None:
        return None


class NoEncoder:
    """An image runner the attempts under test never reach the model of."""

    image_size = 256
    low_res_size = 64
    device = "cpu"

    def encode(self, image: npt.NDArray[np.uint8]) -> ImageEmbedding:
        raise AssertionError("the model must not run")

    def encode_batch(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[ImageEmbedding]:
        raise AssertionError("the model must not run")

    def predict(
        self,
        embedding: ImageEmbedding,
        prompts: list[VisualPrompt],
        multimask_output: bool,
        return_all_masks: bool,
        return_logits: bool = False,
    ) -> InstanceMasks:
        raise AssertionError("the model must not run")


class FakeModels:
    def get(self, model_id: str) -> ImageRunner:
        return NoEncoder()

    def get_concept(self, model_id: str) -> ConceptRunner:
        raise AssertionError("no concept job here")

    def get_video(self, model_id: str) -> VideoTracker:
        raise AssertionError("no track job here")

    def get_everything(self, model_id: str) -> Sam2EverythingRunner:
        raise AssertionError("no everything job here")

    def input_size(self, model_id: str, concept: bool = False) -> int | None:
        return None


class SoftLimit(Exception):
    pass


def runtime(store: FakeStore, media: RaisingMedia | SceneMedia, root: Path) -> Runtime:
    queue = QueueSettings()
    objects = JobObjects(LocalStore(root, "http://localhost", b"k" * 32))
    return Runtime(
        store=store,
        objects=objects,
        media=media,
        models=FakeModels(),
        embeddings=EmbeddingCache(0),
        # Never reached by a segment job (the client is not even connected).
        batch=BatchContext(BatchStore(redis.Redis(), 60, 30), lambda *_: None, None, BatchLimits.from_settings(queue)),
        track=TrackLimits.from_settings(WorkerSettings()),
        max_image_pixels=10**8,
        max_attempts=3,
        lease_interval=60,
        retry_backoff=2.0,
        timeout_error=SoftLimit,
        ahead=ReadAhead(objects.start),
        behind=WriteBehind(),
        upcoming=lambda queue: [],
    )


def run_once(error: BaseException, root: Path, store: FakeStore | None = None) -> tuple[FakeStore, list[float]]:
    """One attempt; returns the store and the retry delays this attempt asked for."""
    store = store or FakeStore(new_job(SPEC, "t"))
    before = len(store.delays)
    execute(store.job.id, runtime(store, RaisingMedia(error), root))
    return store, store.delays[before:]


def codes(store: FakeStore) -> list[tuple[str, str]]:
    return [(name, error.code) for name, error in store.calls if isinstance(error, SamqError)]


def test_transient_errors_are_retried_with_growing_delays_up_to_the_cap(tmp_path: Path) -> None:
    store = FakeStore(new_job(SPEC, "t"))
    delays: list[float] = []
    for _ in range(3):
        _, resent = run_once(MediaFetchError("timeout"), tmp_path, store)
        delays += resent
    assert delays == [2.0, 4.0]
    assert [name for name, _ in store.calls] == ["requeue", "requeue", "fail"]
    assert codes(store)[-1] == ("fail", "media_fetch_failed")


def test_permanent_errors_fail_at_once(tmp_path: Path) -> None:
    store, resent = run_once(UnsupportedMediaError("a text file"), tmp_path)
    assert resent == []
    assert codes(store) == [("fail", "unsupported_media_type")]


def test_a_bug_fails_the_job_as_internal_error_without_raising(tmp_path: Path) -> None:
    store, _ = run_once(ZeroDivisionError("bug"), tmp_path)
    assert codes(store) == [("fail", "internal_error")]


def test_the_soft_time_limit_fails_with_timeout(tmp_path: Path) -> None:
    store, _ = run_once(SoftLimit("soft limit"), tmp_path)
    assert codes(store) == [("fail", "timeout")]


def test_a_cancel_request_stops_at_the_first_checkpoint(tmp_path: Path) -> None:
    store = FakeStore(new_job(SPEC, "t"), cancel=True)
    rt = runtime(store, SceneMedia(), tmp_path)
    execute(store.job.id, rt)
    assert store.calls == [("cancel", 1)]  # before the encoder: the fake runner refuses to encode


def test_terminal_jobs_are_skipped(tmp_path: Path) -> None:
    store = FakeStore(new_job(SPEC, "t"))
    store.job.status = JobStatus.SUCCEEDED
    store, resent = run_once(AssertionError("must not run"), tmp_path, store)
    assert store.calls == []
    assert resent == []
