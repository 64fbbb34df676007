"""The reconcile pass, on every worker's housekeeping timer: what a lost worker or a lost finalizer left behind.

Only Redis is touched here (it runs in the worker's main process, never near a model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from tasks.batch_specs import BatchSpec
from worker.pipeline.context import BatchContext, JobRecords

log = logging.getLogger(__name__)

NUDGE_SECONDS = 60
"""The reconcile pass re-sends a lost finalizer's task at most this often per batch."""


def reconcile(jobs: JobRecords, ctx: BatchContext, send_finalize: Callable[[str], None]) -> None:
    """One pass: re-send shards whose worker died; stop canceled batches; finalize those whose finalizer was lost."""
    for job_id, shard in ctx.store.lapsed_shards():
        job = jobs.get(job_id)
        if ctx.store.take_back(job_id, shard) and job is not None and not job.status.is_terminal:
            log.warning("batch %s shard %d: lease lapsed (worker lost); sent again", job_id, shard)
            ctx.send_shard(job_id, shard, isinstance(job.spec, BatchSpec) and job.spec.template.type == "track")
    for job_id in ctx.store.open_batches():
        job = jobs.get(job_id)
        if job is None or job.status.is_terminal:
            ctx.store.close(job_id)
            continue
        state = ctx.store.state(job_id)
        if state is None:
            continue
        if state.stop is None and jobs.cancel_requested(job_id):
            ctx.store.stop(job_id, "canceled")
        elif not (state.complete or state.stop):
            continue
        if not ctx.store.finalizer_live(job_id) and ctx.store.nudge(job_id, NUDGE_SECONDS):
            log.warning("batch %s: no live finalizer; finalize sent", job_id)
            send_finalize(job_id)
