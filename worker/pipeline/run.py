"""One job of any type on one image or video, run to its result: the dispatch by type, and what an error ends it
with. Shared by a single job's attempt (``worker.pipeline.attempt``) and a batch's items (``worker.pipeline.batch``).
"""

from __future__ import annotations

import logging

from tasks.batch_specs import BatchSpec
from tasks.errors import SamqError
from tasks.everything_specs import EverythingSpec
from tasks.jobs import Job
from tasks.specs import ConceptSpec, SegmentSpec
from tasks.track_specs import TrackSpec
from worker.pipeline.context import Checkpoint, Finish, Runtime
from worker.pipeline.images import run_concept, run_embed, run_everything, run_segment
from worker.pipeline.tracking import run_track, track_context

log = logging.getLogger(__name__)


def run(job: Job, rt: Runtime, checkpoint: Checkpoint, keep_logits: bool = True) -> Finish:
    """The model work of a job on one image or video (a single job, or a batch's item), and what finishes it; raises
    what it ends with.

    ``keep_logits``: a segment job also stores the low-res logits that a later ``mask_input`` refines (batch items
    do not: nothing can refer to them).
    """
    spec = job.spec
    if isinstance(spec, SegmentSpec):
        return run_segment(job, spec, rt, checkpoint, keep_logits=keep_logits)
    if isinstance(spec, ConceptSpec):
        return run_concept(job, spec, rt, checkpoint)
    if isinstance(spec, EverythingSpec):
        return run_everything(job, spec, rt, checkpoint)
    if isinstance(spec, TrackSpec):  # a track job streams its results as it goes: done when it returns
        result = run_track(job, spec, track_context(job, spec, rt), checkpoint)
        return lambda: result
    if isinstance(spec, BatchSpec):
        raise TypeError(f"job {job.id}: a batch has no result of its own; it is expanded into shards")
    return run_embed(job, spec, rt, checkpoint)


def job_error(error: Exception, what: str, noun: str = "job") -> SamqError:
    """The error a job (or a batch's item: ``noun``) ends with: a ``SamqError`` as it is; anything else is a bug,
    logged with its traceback under ``what`` and reported as ``internal_error``."""
    if isinstance(error, SamqError):
        return error
    log.error("%s: unexpected error", what, exc_info=error)
    return SamqError(f"internal error while running the {noun}; see the worker log")
