"""The object-store interface every backend implements, and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


class StorageError(Exception):
    """Root of storage failures."""


class ObjectNotFoundError(StorageError):
    """The key does not exist."""


class ObjectTooLargeError(StorageError):
    """The object is larger than the reader's ``max_bytes``."""


class BackendUnavailableError(StorageError):
    """The backend could not be reached, or answered with a server error (worth retrying)."""


@dataclass(frozen=True)
class PresignedUrl:
    url: str
    expires_at: datetime


class ObjectStore(Protocol):
    """Bytes under string keys. Keys come from ``storage.keys``; backends never invent them."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write (or overwrite) ``key``; an overwrite of the same bytes is a no-op in effect."""

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        """Write (or overwrite) ``key`` with the contents of a local file, streamed (large results)."""

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """Read ``key``. Raises ObjectNotFoundError, or ObjectTooLargeError past ``max_bytes``."""

    def size(self, key: str) -> int | None:
        """Byte size of ``key``, or None when it does not exist."""

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many."""

    def presign_get(self, key: str, expires_in: int) -> PresignedUrl:
        """A URL anyone holding it can GET until it expires."""

    def ping(self) -> None:
        """Raise BackendUnavailableError unless the backend answers (readiness probe)."""
