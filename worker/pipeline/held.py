"""Messages a worker took and never began (it died in between): back to their queues, not after hours.

Leases cover work that began: a job's attempt, a shard's claim. A worker killed -9 after Redis delivered it a message
and before its job started (or its shard was claimed) leaves the message in Celery's ``unacked`` hash, where only
Redis's visibility timeout (hours: longer than the longest video job) would bring it back. A live worker begins within
milliseconds of a delivery (``tasks.orphans``), so the housekeeping pass takes the messages held longer than
``SAMQ_ORPHAN_AFTER_SECONDS`` (``tasks.orphans.held_since``) and puts back those whose work never began. A message
restored while its work is under way elsewhere (its job was reaped and sent again meanwhile) only makes a duplicate
delivery, which the job store (``JobStore.start``) or the batch store (``claim_shard``) turns away.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tasks.batch_store import BatchStore
from tasks.jobs import JobStatus
from tasks.messages import TaskCall
from tasks.names import RUN_JOB_TASK, RUN_SHARD_TASK
from tasks.orphans import HeldMessage
from worker.pipeline.context import JobRecords

log = logging.getLogger(__name__)


def restore_held(
    held: list[HeldMessage], jobs: JobRecords, shards: BatchStore, restore: Callable[[str], None]
) -> list[HeldMessage]:
    """Restore (``Dispatcher.restore``) the messages of ``held`` whose work never began; returns them."""
    restored = []
    for message in held:
        if never_began(message.call, jobs, shards):
            call = message.call
            log.warning(
                "%s %s: taken by a worker that never began it (lost); put back in its queue", call.task, call.kwargs
            )
            restore(message.tag)
            restored.append(message)
    return restored


def never_began(call: TaskCall, jobs: JobRecords, shards: BatchStore) -> bool:
    """A ``run_job`` whose job is still queued, or a ``run_shard`` of a live batch whose shard no run holds or
    finished. Any other task (webhook deliveries, finalizers) is left to the broker: their own records retry them."""
    job = jobs.get(call.job_id) if call.job_id is not None else None
    if job is None or job.status.is_terminal:
        return False
    if call.task == RUN_JOB_TASK:
        return job.status == JobStatus.QUEUED
    shard = call.kwargs.get("shard")
    return call.task == RUN_SHARD_TASK and isinstance(shard, int) and shards.unclaimed(job.id, shard)
