"""The object store as job code uses it: one place where a storage failure becomes the job's error.

A backend that cannot be reached (or refuses) fails the attempt with ``storage_unavailable``, a transient error
the job is retried for; a missing or oversized object keeps its storage error (``ObjectNotFoundError``,
``ObjectTooLargeError``), which only the caller can name (a missing upload, an absent manifest, …).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from storage import keys
from storage.base import ObjectNotFoundError, ObjectStore, ObjectTooLargeError, StorageError
from tasks.errors import StorageUnavailableError
from tasks.jobs import Job, ResultFile


class JobObjects:
    """``store`` behind job-side reads and writes; ``write`` and ``read`` take names under the job's folder."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        with _unavailable("read", key):
            return self.store.get(key, max_bytes)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        with _unavailable("write", key):
            self.store.put(key, data, content_type)

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
        with _unavailable("write", key):
            self.store.put_file(key, path, content_type)
        return ResultFile(name=name, key=key, bytes=path.stat().st_size, content_type=content_type)

    def discard(self, job: Job, name: str) -> None:
        """Delete the job's files under ``name``, best effort: a leftover only costs space."""
        with contextlib.suppress(StorageError):
            self.store.delete_prefix(keys.job_file(job.tenant, job.id, name))


@contextlib.contextmanager
def _unavailable(verb: str, key: str) -> Iterator[None]:
    try:
        yield
    except (ObjectNotFoundError, ObjectTooLargeError):
        raise
    except StorageError as e:
        raise StorageUnavailableError(f"could not {verb} {key}: {e}") from e
