"""Object storage from request threads, bounded: a stalled S3 may slow the requests that need it, never the ones
that do not (health checks, job status, listings, which need only Redis).

At most ``slots`` request threads wait on storage at once; a request that finds none free within ``wait_seconds``
answers 503 ``storage_busy`` with ``Retry-After``. The API's storage client also has short timeouts and few
retries (``SAMQ_API_STORAGE_TIMEOUT_SECONDS``), so a slot comes back within seconds even from a frozen endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from api.errors import RETRY_AFTER_SECONDS, ApiError

T = TypeVar("T")


class StorageSlots:
    def __init__(self, slots: int, wait_seconds: float) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._count = slots
        self._wait = wait_seconds

    def call(self, operation: Callable[[], T]) -> T:
        """``operation()`` (one storage call) in a free slot; 503 ``storage_busy`` when none frees up in time."""
        if not self._slots.acquire(timeout=self._wait):
            raise ApiError(
                503,
                "storage_busy",
                f"object storage is slow to answer and {self._count} requests already wait on it; retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )
        try:
            return operation()
        finally:
            self._slots.release()
