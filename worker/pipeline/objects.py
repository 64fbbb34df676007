"""The object store as job code uses it: one place where a storage failure becomes the job's error.

A backend that cannot be reached (or refuses) is tried again, with exponential backoff and jitter, for up to
``outage_seconds`` (``SAMQ_WORKER_STORAGE_OUTAGE_SECONDS``): a short outage costs the job time, not an attempt,
and the jobs queued behind it wait instead of failing one after another. Past the budget the attempt fails with
``storage_unavailable``, a transient error the job is retried for. A missing or oversized object keeps its
storage error (``ObjectNotFoundError``, ``ObjectTooLargeError``), which only the caller can name (a missing
upload, an absent manifest, …).

The files of one result are independent of each other (readers find them through the job's committed result,
written after them all), so :meth:`JobObjects.writes` sends them at once, a round trip for all instead of one each.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from storage import keys
from storage.base import ObjectNotFoundError, ObjectStore, ObjectTooLargeError, StorageError
from tasks.errors import StorageUnavailableError
from tasks.jobs import Job, ResultFile

log = logging.getLogger(__name__)
T = TypeVar("T")
WRITERS = 8
"""Threads a process writes a result's files with, at once (each waits on a storage round trip, not on the CPU;
below the S3 client's ``SAMQ_STORAGE_MAX_CONNECTIONS``)."""


class JobObjects:
    """``store`` behind job-side reads and writes; ``write`` and ``read`` take names under the job's folder."""

    def __init__(self, store: ObjectStore, outage_seconds: float = 0.0) -> None:
        self.store = store
        self._outage_seconds = outage_seconds
        self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="samq-write")  # threads start on first use

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        return self.ride_out("read", key, lambda: self.store.get(key, max_bytes))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.ride_out("write", key, lambda: self.store.put(key, data, content_type))

    def start(self, call: Callable[[], T]) -> Future[T]:
        """``call()`` (a read, say) on the writer threads, while the caller goes on with another round trip."""
        return self._writers.submit(call)

    def read(self, job: Job, name: str) -> bytes:
        """A file of the job's folder (``jobs/{id}/{name}``)."""
        return self.get(keys.job_file(job.tenant, job.id, name))

    def write(self, job: Job, name: str, data: bytes, content_type: str) -> ResultFile:
        """Store a file of the job's folder; returns its entry for the job's result."""
        file = _entry(job, name, len(data), content_type)
        self.put(file.key, data, content_type)
        return file

    @contextlib.contextmanager
    def writes(self, job: Job) -> Iterator[Writes]:
        """Files of the job's folder written at once: each :meth:`Writes.add` starts one on the writer threads; the
        block ends when all are stored, or raises the first one's error (in the order added) once all have ended.
        A block left by an error cancels the writes not yet started (a finished one only costs space)."""
        writes = Writes(job, self._writers, self.put)
        try:
            yield writes
            writes.wait()
        except BaseException:
            writes.cancel()
            raise

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


class Writes:
    """The writes of one :meth:`JobObjects.writes` block."""

    def __init__(self, job: Job, writers: ThreadPoolExecutor, put: Callable[[str, bytes, str], None]) -> None:
        self._job, self._writers, self._put = job, writers, put
        self._pending: list[Future[None]] = []

    def add(self, name: str, data: bytes, content_type: str) -> ResultFile:
        """Start writing ``data`` as the job's ``name``; returns its entry for the job's result (which may name it
        once the block has ended)."""
        file = _entry(self._job, name, len(data), content_type)
        self._pending.append(self._writers.submit(self._put, file.key, data, content_type))
        return file

    def wait(self) -> None:
        wait(self._pending)
        for future in self._pending:
            future.result()

    def cancel(self) -> None:
        for future in self._pending:
            future.cancel()


def _entry(job: Job, name: str, size: int, content_type: str) -> ResultFile:
    return ResultFile(name=name, key=keys.job_file(job.tenant, job.id, name), bytes=size, content_type=content_type)


def _unavailable(error: BaseException) -> bool:
    return isinstance(error, StorageError) and not isinstance(error, ObjectNotFoundError | ObjectTooLargeError)
