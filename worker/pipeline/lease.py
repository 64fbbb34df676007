"""A running attempt's lease: a heartbeat thread that renews it, and the checkpoint the pipeline calls."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

import redis

from tasks.jobs import JobResult
from worker.pipeline.context import JobRecords

log = logging.getLogger(__name__)


class JobCanceledError(Exception):
    """The client canceled the running job; raised at the next checkpoint. ``partial``: what a long job (video)
    finished before it stopped, kept as the canceled job's result."""

    def __init__(self, job_id: str, partial: JobResult | None = None) -> None:
        super().__init__(job_id)
        self.partial = partial


class LeaseLostError(Exception):
    """This attempt was fenced off (the reaper gave the job to a newer attempt); stop without writing."""


class Lease:
    """Renews a lease every ``interval`` seconds while the block runs (a job's attempt, or a batch shard).

    ``renew`` returns False once the lease is gone (fenced off); ``canceled`` says whether the work must stop.
    """

    def __init__(self, job_id: str, renew: Callable[[], bool], canceled: Callable[[], bool], interval: float) -> None:
        self._job_id = job_id
        self._renew_once = renew
        self._canceled = canceled
        self._interval = interval
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{job_id}", daemon=True)
        self._started = False

    @classmethod
    def of_attempt(cls, store: JobRecords, job_id: str, attempt: int, interval: float) -> Lease:
        """The lease of a job's running attempt."""
        return cls(job_id, lambda: store.heartbeat(job_id, attempt), lambda: store.cancel_requested(job_id), interval)

    def start(self) -> Lease:
        """Start renewing, once (``stop`` ends it; a ``with`` block does both, or only stops one started already)."""
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._started:
            self._thread.join()

    def __enter__(self) -> Lease:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def checkpoint(self) -> None:
        """Raise JobCanceledError or LeaseLostError when the work should stop here.

        Cheap on purpose (one round trip): a fenced attempt that slips past it is still refused at its final write.
        """
        if self._lost.is_set():
            raise LeaseLostError(self._job_id)
        if self._canceled():
            raise JobCanceledError(self._job_id)

    def _renew(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._renew_once():
                    self._lost.set()
                    return
            except redis.RedisError:
                log.warning("lease renewal for %s failed; will retry", self._job_id, exc_info=True)
