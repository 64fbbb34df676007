"""The pipeline's outcome handling, with fakes for every collaborator (no Redis, no model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from storage.base import ObjectNotFoundError
from tasks.errors import MediaFetchError, SamqError, UnsupportedMediaError
from tasks.jobs import Job, JobResult, JobStatus, new_job
from tasks.pipeline import Runtime, execute
from tasks.specs import SegmentSpec
from tests.support.images import png_bytes, scene
from worker.embedding_cache import EmbeddingCache

pytestmark = pytest.mark.unit

SPEC = SegmentSpec.model_validate(
    {"type": "segment", "image": {"upload": "upl_x"}, "prompts": [{"points": [{"x": 1, "y": 1}]}]}
)


@dataclass
class FakeStore:
    job: Job
    calls: list[tuple[str, Any]] = field(default_factory=list)
    cancel: bool = False

    def start(self, job_id: str) -> Job | None:
        if self.job.status.is_terminal:
            return None
        self.job.status, self.job.attempts = JobStatus.RUNNING, self.job.attempts + 1
        return self.job

    def heartbeat(self, job_id: str, attempt: int) -> bool:
        return True

    def cancel_requested(self, job_id: str) -> bool:
        return self.cancel

    def succeed(self, job_id: str, attempt: int, result: JobResult) -> bool:
        self.calls.append(("succeed", result))
        return True

    def fail(self, job_id: str, attempt: int, error: SamqError) -> bool:
        self.job.status = JobStatus.FAILED
        self.calls.append(("fail", error))
        return True

    def requeue(self, job_id: str, attempt: int, error: SamqError) -> bool:
        self.job.status = JobStatus.QUEUED
        self.calls.append(("requeue", error))
        return True

    def cancel_running(self, job_id: str, attempt: int, partial: object = None) -> bool:
        self.calls.append(("cancel", attempt))
        return True


class RaisingMedia:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def fetch(self, ref: object, tenant: str) -> bytes:
        raise self.error


class FakeModels:
    def get(self, model_id: str) -> object:
        return type("Runner", (), {"image_size": 256, "low_res_size": 64, "device": "cpu"})()


class EmptyObjects:
    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        raise ObjectNotFoundError(key)


class SoftLimit(Exception):
    pass


def runtime(store: FakeStore, media: object, resent: list[float]) -> Runtime:
    return Runtime(
        store=store,  # type: ignore[arg-type]
        objects=object(),  # type: ignore[arg-type]
        media=media,  # type: ignore[arg-type]
        models=FakeModels(),  # type: ignore[arg-type]
        embeddings=EmbeddingCache(0),
        resend=lambda job, delay: resent.append(delay),
        max_image_pixels=10**8,
        max_attempts=3,
        lease_interval=60,
        retry_backoff=2.0,
        timeout_error=SoftLimit,
    )


def run_once(error: BaseException, store: FakeStore | None = None) -> tuple[FakeStore, list[float]]:
    store = store or FakeStore(new_job(SPEC, "t"))
    resent: list[float] = []
    execute(store.job.id, runtime(store, RaisingMedia(error), resent))
    return store, resent


def test_transient_errors_are_retried_with_growing_delays_up_to_the_cap() -> None:
    store = FakeStore(new_job(SPEC, "t"))
    delays: list[float] = []
    for _ in range(3):
        _, resent = run_once(MediaFetchError("timeout"), store)
        delays += resent
    assert delays == [2.0, 4.0]
    assert [name for name, _ in store.calls] == ["requeue", "requeue", "fail"]
    assert store.calls[-1][1].code == "media_fetch_failed"


def test_permanent_errors_fail_at_once() -> None:
    store, resent = run_once(UnsupportedMediaError("a text file"))
    assert resent == []
    assert [(n, e.code) for n, e in store.calls] == [("fail", "unsupported_media_type")]


def test_a_bug_fails_the_job_as_internal_error_without_raising() -> None:
    store, _ = run_once(ZeroDivisionError("bug"))
    assert [(n, e.code) for n, e in store.calls] == [("fail", "internal_error")]


def test_the_soft_time_limit_fails_with_timeout() -> None:
    store, _ = run_once(SoftLimit("soft limit"))
    assert [(n, e.code) for n, e in store.calls] == [("fail", "timeout")]


def test_a_cancel_request_stops_at_the_first_checkpoint() -> None:
    store = FakeStore(new_job(SPEC, "t"), cancel=True)
    media = type("Media", (), {"fetch": lambda self, ref, tenant: png_bytes(scene())})()
    rt = runtime(store, media, [])
    rt.objects = EmptyObjects()  # type: ignore[assignment]
    execute(store.job.id, rt)
    assert store.calls == [("cancel", 1)]  # before the encoder: the fake runner has no encode()


def test_terminal_jobs_are_skipped() -> None:
    store = FakeStore(new_job(SPEC, "t"))
    store.job.status = JobStatus.SUCCEEDED
    store, resent = run_once(AssertionError("must not run"), store)
    assert store.calls == []
    assert resent == []
