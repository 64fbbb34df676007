"""Job-side storage rides out a short outage (backoff within a budget) and names what it could not do after it; a
result's files are written at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from storage import keys
from storage.base import BackendUnavailableError, ObjectNotFoundError
from storage.local import LocalStore
from tasks.errors import StorageUnavailableError
from tasks.jobs import Job, new_job
from tasks.specs import SegmentSpec
from worker.pipeline.objects import WRITERS, JobObjects


class Flaky(LocalStore):
    """A local store whose backend is unreachable for its first ``failures`` calls."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root, "http://localhost", b"k" * 32)
        self.failures = failures
        self.calls = 0

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendUnavailableError("connection refused")
        return super().get(key, max_bytes)


def test_a_short_outage_costs_time_not_the_attempt(tmp_path: Path) -> None:
    store = Flaky(tmp_path, failures=3)
    store.put("a/b", b"data")
    assert JobObjects(store, outage_seconds=30).get("a/b") == b"data"
    assert store.calls == 4


def test_past_the_budget_the_attempt_fails_as_storage_unavailable(tmp_path: Path) -> None:
    store = Flaky(tmp_path, failures=10**6)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"could not read a/b for 1 s \(SAMQ_WORKER_STORAGE_OUTAGE"):
        JobObjects(store, outage_seconds=1).get("a/b")
    assert 1 <= time.monotonic() - started < 10 and store.calls > 1


def test_a_missing_object_is_not_an_outage(tmp_path: Path) -> None:
    store = Flaky(tmp_path, failures=0)
    with pytest.raises(ObjectNotFoundError):
        JobObjects(store, outage_seconds=30).get("nothing/here")
    assert store.calls == 1


# ---- a result's files, written at once ------------------------------------------------------------------------


class Gated(LocalStore):
    """A local store whose writes wait at a gate: ``together`` writes must be in flight at once to pass it, and
    the ones named in ``failing`` fail after it (``slow`` ones pass later than the rest)."""

    def __init__(self, root: Path, together: int, failing: frozenset[str] = frozenset(), slow: str = "") -> None:
        super().__init__(root, "http://localhost", b"k" * 32)
        self.gate = threading.Barrier(together, timeout=10)
        self.failing, self.slow = failing, slow
        self.started: list[str] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        name = key.rsplit("/", 1)[-1]
        self.started.append(name)
        self.gate.wait()  # a write that waited for the previous one to end would never get through
        if name == self.slow:
            time.sleep(0.3)
        if name in self.failing:
            raise BackendUnavailableError(f"{name} refused")
        super().put(key, data, content_type)


def job() -> Job:
    return new_job(SegmentSpec.model_validate({"type": "segment", "image": {"upload": "upl_x"}}), "default")


def test_a_results_files_are_written_at_once_and_stored_when_the_block_ends(tmp_path: Path) -> None:
    store = Gated(tmp_path, together=3)
    objects, the_job = JobObjects(store), job()
    with objects.writes(the_job) as writes:
        files = [writes.add(name, name.encode(), "text/plain") for name in ("a", "b", "result.json")]
    assert [(f.name, f.key, f.bytes) for f in files] == [
        (name, keys.job_file("default", the_job.id, name), len(name)) for name in ("a", "b", "result.json")
    ]
    assert [objects.read(the_job, name) for name in ("a", "b", "result.json")] == [b"a", b"b", b"result.json"]


def test_the_first_failed_write_is_raised_once_every_write_has_ended(tmp_path: Path) -> None:
    store = Gated(tmp_path, together=3, failing=frozenset({"a", "b"}), slow="a")
    objects, the_job = JobObjects(store), job()

    def write_three() -> None:
        with objects.writes(the_job) as writes:
            for name in ("a", "b", "c"):
                writes.add(name, b"x", "text/plain")

    with pytest.raises(StorageUnavailableError, match=r"could not write \S+/a: a refused"):  # added first
        write_three()
    assert objects.read(the_job, "c") == b"x"  # the others ended first


class Held(LocalStore):
    """A local store whose writes wait until ``release`` is set."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "http://localhost", b"k" * 32)
        self.release = threading.Event()
        self.started: list[str] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.started.append(key.rsplit("/", 1)[-1])
        self.release.wait(10)
        super().put(key, data, content_type)


def test_an_error_in_the_block_cancels_the_writes_not_yet_started(tmp_path: Path) -> None:
    store = Held(tmp_path)
    objects = JobObjects(store)

    def fail_after_adding_more_than_the_writers_take() -> None:
        with objects.writes(job()) as writes:
            for i in range(WRITERS + 3):
                writes.add(f"{i}.png", b"png", "image/png")
            deadline = time.monotonic() + 10
            while len(store.started) < WRITERS and time.monotonic() < deadline:  # every writer thread holds one
                time.sleep(0.01)
            raise RuntimeError("encoding failed")

    with pytest.raises(RuntimeError, match="encoding failed"):
        fail_after_adding_more_than_the_writers_take()
    store.release.set()
    objects._writers.shutdown(wait=True)
    assert sorted(store.started) == sorted(f"{i}.png" for i in range(WRITERS))  # the 3 queued never started
