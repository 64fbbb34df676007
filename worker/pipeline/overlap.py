"""Keeping the model busy: a job's reads start before it runs, and its writes end after it has returned.

Storage is far (tens of milliseconds per request on S3) and the model is fast (a GPU encodes an image in ~15 ms), so
a worker that fetched, computed and wrote one job after another would leave the model idle most of the time. In the
worker's one pool process, three things overlap instead:

- **read-ahead** (:class:`ReadAhead`): when a job starts, the message next in its queue is peeked at and that job's
  image, and its embedding's shared-tier entry, are read on the I/O threads while this job computes. A batch shard
  reads its next items the same way. The job that needs a read takes it (in flight or done); a read nobody takes
  (its job went to another worker) is dropped when room is needed: it only cost its round trip.
- **compute**: the model, on the task's own thread, one job at a time (one process per GPU).
- **write-behind** (:class:`WriteBehind`): a job's result is encoded and written, and its outcome committed, on a
  thread of its own while the next job computes. Its lease is renewed until the commit, so a worker killed with writes
  in flight loses nothing: the lease lapses and the reaper runs the job again (writes are idempotent, keyed by job).
  One job finishes behind at a time; the next waits for it, so memory holds at most one result being written.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)

READ_AHEAD_CAPACITY = 24
"""Reads kept at most (a single job reads two; a shard's window, its next encode group, up to 2 x 8 + 2)."""


class ReadAhead:
    """Reads started before the work that needs them, each taken once, by key (a storage key, or :func:`media_key`).

    ``start`` runs a read on the I/O threads (``JobObjects.start``). Thread-safe: reads are started by look-ahead
    work on those threads and taken by the job's own.
    """

    def __init__(
        self, start: Callable[[Callable[[], bytes]], Future[bytes]], capacity: int = READ_AHEAD_CAPACITY
    ) -> None:
        self._start = start
        self._capacity = capacity
        self._reads: OrderedDict[str, Future[bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, key: str, read: Callable[[], bytes]) -> None:
        """Start ``read()`` for ``key`` unless one is kept already (or nothing may be: capacity 0)."""
        with self._lock:
            if key in self._reads or not self._capacity:
                return
            self._keep(key, self._start(read))

    def keep(self, key: str, data: bytes) -> None:
        """Keep bytes read already (by a batched encode) for the work that needs them next."""
        if not self._capacity:
            return
        done: Future[bytes] = Future()
        done.set_result(data)
        with self._lock:
            self._reads.pop(key, None)
            self._keep(key, done)

    def take(self, key: str) -> Future[bytes] | None:
        """The read started for ``key`` (its result, or the error the read ended with), once; None if none was."""
        with self._lock:
            return self._reads.pop(key, None)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._reads

    def __len__(self) -> int:
        with self._lock:
            return len(self._reads)

    def _keep(self, key: str, read: Future[bytes]) -> None:
        self._reads[key] = read
        while len(self._reads) > self._capacity:
            _, dropped = self._reads.popitem(last=False)
            dropped.cancel()


def media_key(tenant: str, ref_json: str) -> str:
    """The read-ahead key of a media reference's bytes."""
    return f"media:{tenant}:{ref_json}"


class WriteBehind:
    """Finishes one piece of work at a time (a job's writes and commit) on a thread of its own.

    ``submit`` first waits for the previous finish, so at most one is behind. A finish handles its own errors (they
    become job state); anything that escapes is a bug, logged. ``drain`` waits until nothing is behind: a batch shard
    before it records its completion, and the pool process before it exits (``worker_process_shutdown``).
    """

    def __init__(self, inline: bool = False) -> None:
        """``inline``: finish in the caller's thread, before ``submit`` returns (overlap turned off)."""
        self._inline = inline
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="samq-finish")
        self._last: Future[None] | None = None
        self._lock = threading.Lock()

    def submit(self, finish: Callable[[], None]) -> None:
        if self._inline:
            _logged(finish)
            return
        with self._lock:
            self._wait()
            self._last = self._thread.submit(_logged, finish)

    def drain(self) -> None:
        with self._lock:
            self._wait()

    def _wait(self) -> None:
        if self._last is not None:
            self._last.result()
            self._last = None


def _logged(finish: Callable[[], None]) -> None:
    try:
        finish()
    except Exception:
        log.exception("finishing a job behind the model failed; its lease lapses and the reaper runs it again")
