"""Stable task and queue names: the contract between the API (producer) and workers (consumers).

Renaming any of these strands messages already queued, so they never change.
"""

from __future__ import annotations

from enum import StrEnum


class Queue(StrEnum):
    """Separate queues so that long work cannot starve short work."""

    INTERACTIVE = "interactive"  # segment, embed, concept: seconds
    VIDEO = "video"  # track: minutes
    BULK = "bulk"  # batch items
    IO = "io"  # CPU-only side work: webhooks, reconcile


RUN_JOB_TASK = "samq.run_job"
PING_TASK = "samq.ping"
DELIVER_WEBHOOK_TASK = "samq.deliver_webhook"

QUEUE_BY_JOB_TYPE: dict[str, Queue] = {
    "segment": Queue.INTERACTIVE,
    "embed": Queue.INTERACTIVE,
}
