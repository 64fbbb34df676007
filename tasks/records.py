"""Compare-and-set of one job record, with the writes that go with it, in one round trip.

A change to a job is computed in Python (``tasks.jobs``' state machine, on the parsed record) and written by a Lua
script that applies it only if the record is still the one the change was computed from (compared by SHA-1) and,
for a change that depended on the job's lease, only if that lease is still as live as it was read. Otherwise
nothing is written and the caller reads the record again and recomputes. Like WATCH/MULTI, but without the WATCH
and the read inside it: a transition costs one round trip, or two when the record must be read first.

The record this process wrote last is remembered (:class:`Known`): a worker's next change of the same job (its
``succeeded`` after its ``running``) is tried against it without reading the record. Anything written since by
another process (a cancel request, the reaper) fails the comparison and is read.

The writes go to keys the script is not given in ``KEYS``: samq needs one Redis server (no cluster), as Celery's
Redis broker does.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

import redis
from redis.client import Pipeline

from tasks.redis_keys import LEASES, job_key

# KEYS[1]: the record; KEYS[2]: the leases. ARGV[1]: the SHA-1 of the record the change was computed from;
# ARGV[2]: '' (the change did not read the lease), '1' (it read it live) or '0' (lapsed or absent); ARGV[3]: the job
# id; ARGV[4]: the time the lease was judged at. Then the writes: each as its argument count, then its arguments.
_APPLY = """
local current = redis.call('GET', KEYS[1])
if not current or redis.sha1hex(current) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' then
    local lease = redis.call('ZSCORE', KEYS[2], ARGV[3])
    local live = (lease and tonumber(lease) > tonumber(ARGV[4])) and '1' or '0'
    if live ~= ARGV[2] then return 0 end
end
local i = 5
while i <= #ARGV do
    local n = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
end
return 1
"""

KNOWN_RECORDS = 256
"""Records remembered per process: the jobs a worker runs at once, or an API process changed lately, and more."""


@dataclass(frozen=True)
class Snapshot:
    """A record as read (or as this process last wrote it), and its lease when the change depends on it."""

    raw: str
    lease_live: bool | None = None
    """None: not read (the change does not depend on it)."""
    judged_at: float = 0.0
    remembered: bool = False
    """As this process last wrote it (:class:`Known`), not read: a change that it refuses is judged again on the
    stored record."""


class Known:
    """The record this process last wrote, per job: the raw JSON (a bounded, thread-safe LRU)."""

    def __init__(self, size: int = KNOWN_RECORDS) -> None:
        self._size = size
        self._records: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, job_id: str) -> str | None:
        with self._lock:
            return self._records.pop(job_id, None)

    def keep(self, job_id: str, raw: str) -> None:
        with self._lock:
            self._records[job_id] = raw
            self._records.move_to_end(job_id)
            while len(self._records) > self._size:
                self._records.popitem(last=False)


class Records:
    """Reads and compare-and-set writes of job records (``client`` decodes responses)."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._apply = client.register_script(_APPLY)
        self.known = Known()

    def remembered(self, job_id: str) -> Snapshot | None:
        """The record as this process last wrote it, if it remembers it (once: a change writes it again)."""
        raw = self.known.take(job_id)
        return None if raw is None else Snapshot(raw, remembered=True)

    def carried(self, raw: str) -> Snapshot:
        """A copy of the record that came with a message: tried like a remembered one, with its lease taken as not
        live (a queued job has none; a live one fails the comparison, and the record is read)."""
        return Snapshot(raw, lease_live=False, judged_at=time.time(), remembered=True)

    def read(self, job_id: str, with_lease: bool = False) -> Snapshot | None:
        """The record (and whether its lease is live, read in the same round trip); None when there is none."""
        if not with_lease:
            raw = cast(str | None, self._redis.get(job_key(job_id)))
            return None if raw is None else Snapshot(raw)
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(job_key(job_id))
            pipe.zscore(LEASES, job_id)
            raw, lease = cast(tuple[str | None, float | None], pipe.execute())
        now = time.time()
        return None if raw is None else Snapshot(raw, lease is not None and lease > now, now)

    def writes(self) -> Pipeline:
        """A pipeline that only collects writes, for :meth:`commit`."""
        return self._redis.pipeline(transaction=False)

    def commit(self, job_id: str, seen: Snapshot, raw: str, writes: Pipeline, remember: bool = True) -> bool:
        """Apply ``writes`` (which include the new record ``raw``) if the record and lease are still as ``seen``;
        ``remember`` the record written (not a terminal one: nothing changes it again)."""
        commands: list[Any] = []
        for args, _options in writes.command_stack:
            commands += [len(args), *args]
        lease = "" if seen.lease_live is None else str(int(seen.lease_live))
        sha1 = hashlib.sha1(seen.raw.encode(), usedforsecurity=False).hexdigest()
        applied = bool(
            self._apply(keys=[job_key(job_id), LEASES], args=[sha1, lease, job_id, seen.judged_at, *commands])
        )
        if applied and remember:
            self.known.keep(job_id, raw)
        return applied
