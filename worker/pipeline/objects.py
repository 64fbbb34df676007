"""The object store as job code uses it: one place where a storage failure becomes the job's error.

A backend that cannot be reached (or refuses) is tried again, with exponential backoff and jitter, for up to
``outage_seconds`` (``SAMQ_WORKER_STORAGE_OUTAGE_SECONDS``): a short outage costs the job time, not an attempt,
and the jobs queued behind it wait instead of failing one after another. Past the budget the attempt fails with
``storage_unavailable``, a transient error the job is retried for. A missing or oversized object keeps its
storage error (``ObjectNotFoundError``, ``ObjectTooLargeError``), which only the caller can name (a missing
upload, an absent manifest, …).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from storage import keys
from storage.base import ObjectNotFoundError, ObjectStore, ObjectTooLargeError, StorageError
from tasks.errors import StorageUnavailableError
from tasks.jobs import Job, ResultFile

log = logging.getLogger(__name__)
T = TypeVar("T")


class JobObjects:
    """``store`` behind job-side reads and writes; ``write`` and ``read`` take names under the job's folder."""

    def __init__(self, store: ObjectStore, outage_seconds: float = 0.0) -> None:
        self.store = store
        self._outage_seconds = outage_seconds

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        return self.ride_out("read", key, lambda: self.store.get(key, max_bytes))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.ride_out("write", key, lambda: self.store.put(key, data, content_type))

    def read(self, job: Job, name: str) -> bytes:
        """A file of the job's folder (``jobs/{id}/{name}``)."""
        return self.get(keys.job_file(job.tenant, job.id, name))

    def write(self, job: Job, name: str, data: bytes, content_type: str) -> ResultFile:
        """Store a file of the job's folder; returns its entry for the job's result."""
        key = keys.job_file(job.tenant, job.id, name)
        self.put(key, data, content_type)
        return ResultFile(name=name, key=key, bytes=len(data), content_type=content_type)

    def write_file(self, job: Job, name: str, path: Path, content_type: str) -> ResultFile:
        """``write`` for a local file, streamed (multipart on S3)."""
        key = keys.job_file(job.tenant, job.id, name)
        self.ride_out("write", key, lambda: self.store.put_file(key, path, content_type))
        return ResultFile(name=name, key=key, bytes=path.stat().st_size, content_type=content_type)

    def discard(self, job: Job, name: str) -> None:
        """Delete the job's files under ``name``, best effort: a leftover only costs space."""
        with contextlib.suppress(StorageError):
            self.store.delete_prefix(keys.job_file(job.tenant, job.id, name))

    def ride_out(self, verb: str, key: str, call: Callable[[], T]) -> T:
        """``call()`` (a storage operation), tried again while the backend is unavailable, for up to the outage
        budget; then ``StorageUnavailableError``."""
        retrying = Retrying(
            retry=retry_if_exception(_unavailable),
            wait=wait_exponential_jitter(multiplier=0.25, max=15.0),
            stop=stop_after_delay(self._outage_seconds),
            before_sleep=lambda state: log.warning(
                "storage unavailable (%s of %s), attempt %d; trying again", verb, key, state.attempt_number
            ),
            reraise=True,
        )
        try:
            return retrying(call)
        except (ObjectNotFoundError, ObjectTooLargeError):
            raise
        except StorageError as e:
            waited = (
                f" for {self._outage_seconds:g} s (SAMQ_WORKER_STORAGE_OUTAGE_SECONDS)" if self._outage_seconds else ""
            )
            raise StorageUnavailableError(f"could not {verb} {key}{waited}: {e}") from e


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, StorageError) and not isinstance(error, ObjectNotFoundError | ObjectTooLargeError)
