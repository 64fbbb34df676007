"""A running attempt's lease, renewed by the process's renewal thread, and the checkpoint the pipeline calls."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType

import redis

from tasks.jobs import Job, JobResult
from worker.pipeline.context import JobRecords

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.1
"""A job attempt's checkpoint asks Redis whether the job was canceled at most this often. A cancel is seen at the first checkpoint
this long after the last answer: late by a tenth of a second at most, and a short job's checkpoints (a cache-hit
segment job's two, around a decoder run of tens of milliseconds) cost no round trip."""


class JobCanceledError(Exception):
    """The client canceled the running job; raised at the next checkpoint. ``partial``: what a long job (video)
    finished before it stopped, kept as the canceled job's result."""

    def __init__(self, job_id: str, partial: JobResult | None = None) -> None:
        super().__init__(job_id)
        self.partial = partial


class LeaseLostError(Exception):
    """This attempt was fenced off (the reaper gave the job to a newer attempt); stop without writing."""


class Lease:
    """Renewed every ``interval`` seconds while the block runs (a job's attempt, or a batch shard), by the process's
    one renewal thread (:class:`Renewals`).

    ``renew`` returns False once the lease is gone (fenced off); ``canceled`` says whether the work must stop.
    """

    def __init__(
        self,
        job_id: str,
        renew: Callable[[], bool],
        canceled: Callable[[], bool],
        interval: float,
        cancel_poll: float = 0.0,
        not_canceled_at: float | None = None,
    ) -> None:
        """``cancel_poll``: ask whether to stop at most this often (0: at every checkpoint, as a batch shard must,
        whose own failed item can stop it); ``not_canceled_at``: when (``time.monotonic``) the work was last known
        not canceled, if it was."""
        self.job_id = job_id
        self.renew_once = renew
        self._canceled = canceled
        self.interval = interval
        self.lost = threading.Event()
        self._started = False
        self._cancel_poll = cancel_poll
        self._not_canceled_at = not_canceled_at

    @classmethod
    def of_attempt(cls, store: JobRecords, job: Job, interval: float, read_at: float) -> Lease:
        """The lease of a job's running attempt; ``job`` is its record as read (at ``read_at``) when it started."""
        job_id, attempt = job.id, job.attempts
        return cls(
            job_id,
            lambda: store.heartbeat(job_id, attempt),
            lambda: store.cancel_requested(job_id),
            interval,
            CANCEL_POLL_SECONDS,
            None if job.cancel_requested else read_at,
        )

    def start(self) -> Lease:
        """Start renewing, once (``stop`` ends it; a ``with`` block does both, or only stops one started already)."""
        if not self._started:
            self._started = True
            RENEWALS.add(self)
        return self

    def stop(self) -> None:
        """Renew no more; returns once no renewal of this lease is under way."""
        if self._started:
            RENEWALS.remove(self)

    def __enter__(self) -> Lease:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def checkpoint(self) -> None:
        """Raise JobCanceledError or LeaseLostError when the work should stop here.

        Cheap on purpose (a round trip, at most one per ``cancel_poll``): a fenced attempt that slips past it is
        still refused at its final write.
        """
        if self.lost.is_set():
            raise LeaseLostError(self.job_id)
        asked = time.monotonic()
        if self._not_canceled_at is not None and asked - self._not_canceled_at < self._cancel_poll:
            return
        if self._canceled():
            raise JobCanceledError(self.job_id)
        self._not_canceled_at = asked


class Renewals:
    """The one thread that renews every lease of a process when it is due.

    A thread per lease cost each job ~0.7 ms of latency to start and join; the leases of one process are few (its
    job, a batch shard), and each renewal is one round trip. The thread starts with the first lease and waits while
    there is none; a forked process (a pool child) starts afresh, without its parent's leases or locks.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._changed = threading.Condition()
        self._due: dict[Lease, float] = {}
        self._renewing: Lease | None = None
        self._thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        with self._changed:
            self._due[lease] = time.monotonic() + lease.interval
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="samq-lease-renewals", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    def remove(self, lease: Lease) -> None:
        with self._changed:
            self._due.pop(lease, None)
            while self._renewing is lease:
                self._changed.wait()

    def _run(self) -> None:
        while True:
            with self._changed:
                lease = self._next_due()
                self._renewing = lease
            try:
                if not lease.renew_once():
                    lease.lost.set()  # fenced off: checkpoint raises, and the lease is renewed no more
            except redis.RedisError:
                log.warning("lease renewal for %s failed; will retry", lease.job_id, exc_info=True)
            except Exception:  # the thread renews every lease of the process: nothing may stop it
                log.exception("lease renewal for %s failed; will retry", lease.job_id)
            finally:
                with self._changed:
                    self._renewing = None
                    if lease.lost.is_set():
                        self._due.pop(lease, None)
                    elif lease in self._due:
                        self._due[lease] = time.monotonic() + lease.interval
                    self._changed.notify_all()

    def _next_due(self) -> Lease:
        """Wait (holding the condition) until a lease is due; that lease."""
        while True:
            now = time.monotonic()
            soonest = min(self._due.items(), key=lambda item: item[1], default=None)
            if soonest is not None and soonest[1] <= now:
                return soonest[0]
            self._changed.wait(None if soonest is None else soonest[1] - now)


RENEWALS = Renewals()
os.register_at_fork(after_in_child=RENEWALS.reset)
