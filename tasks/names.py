"""Stable names shared by producers (the API, the CLI) and consumers (workers): queues and tasks, job types, the
media file extensions samq reads, and the name of a job's result document.

Renaming a queue or task strands messages already queued, so they never change.
"""

from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    """Separate queues so that long work cannot starve short work."""

    INTERACTIVE = "interactive"  # segment, embed on SAM2: seconds (everything: a second to minutes, on bulk)
    SAM3 = "sam3"  # every job on SAM3 (840M parameters): workers with the memory for it
    VIDEO = "video"  # track: minutes
    BULK = "bulk"  # batch items, everything jobs
    IO = "io"  # CPU-only side work: webhooks, reconcile


RUN_JOB_TASK = "samq.run_job"
PING_TASK = "samq.ping"
DELIVER_WEBHOOK_TASK = "samq.deliver_webhook"
RUN_SHARD_TASK = "samq.run_shard"
FINALIZE_BATCH_TASK = "samq.finalize_batch"

JOB_TYPES = ("segment", "embed", "concept", "everything", "track", "batch")
SAM3_MODEL = "sam3"

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi"})
"""What a batch takes from an S3 prefix or a local folder (``samq batch``), by file name."""
RESULT_DOCUMENT = "result.json"
"""The name of every job's result document (``GET /v1/jobs/{id}/result``), batch items' included."""
MASK_LOGITS = "logits.npz"
"""A segment job's output format ``logits``: ``masks`` (N×H×W float32 logits at image size; the mask is ``> 0``)
and ``low_res_masks`` (N×r×r), the names of Roboflow's ``binary`` format."""


def queue_for(job_type: str, model: str) -> Queue:
    """Video has its own queue (minutes per job); SAM3 image jobs have theirs, so SAM3 workers can be sized (and
    placed) apart from SAM2 workers. A batch (its expansion, then its shards) runs on ``bulk``, and so does an
    ``everything`` job (hundreds of decoder passes: it would hold up the clicks of interactive jobs)."""
    if job_type == "track":
        return Queue.VIDEO
    if job_type in ("batch", "everything"):
        return Queue.BULK
    if model == SAM3_MODEL:
        return Queue.SAM3
    return Queue.INTERACTIVE
