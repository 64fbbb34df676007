"""Job-side storage rides out a short outage (backoff within a budget) and names what it could not do after it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from storage.base import BackendUnavailableError, ObjectNotFoundError
from storage.local import LocalStore
from tasks.errors import StorageUnavailableError
from worker.pipeline.objects import JobObjects


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
