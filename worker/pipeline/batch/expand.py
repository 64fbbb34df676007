"""A batch's own attempt: list its inputs into shard files, open the batch in Redis and send the shards."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from pathlib import PurePosixPath

from pydantic import ValidationError

from storage.base import ObjectNotFoundError, StorageError
from tasks.batch_specs import BatchItem, BatchSpec, ItemsInputs, ManifestInputs
from tasks.errors import (
    BatchTooLargeError,
    EmptyBatchError,
    InvalidManifestError,
    MediaNotFoundError,
    StorageUnavailableError,
)
from tasks.jobs import Job
from tasks.names import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from tasks.specs import first_problem
from worker.pipeline.batch.layout import shard_name
from worker.pipeline.context import Checkpoint, Runtime

log = logging.getLogger(__name__)


def expand(job: Job, spec: BatchSpec, rt: Runtime, checkpoint: Checkpoint) -> None:
    """Write the shard files, open the batch and send its shards. Idempotent: a re-run after the attempt died
    keeps what an earlier attempt recorded and only re-sends the shards."""
    ctx = rt.batch
    state = ctx.store.state(job.id)
    if state is None:
        videos = spec.template.type == "track"
        size = spec.shard_size or (1 if videos else ctx.limits.shard_size)
        total, shards = _write_shards(job, _inputs(job, spec, rt), size, rt, checkpoint)
        max_failures = math.floor(spec.max_failure_rate * total + 1e-9)
        ctx.store.open(job.id, job.attempts, total, shards, max_failures)
    else:
        ctx.store.open(job.id, job.attempts, state.total, state.shards, state.max_failures)
    state = ctx.store.expect(job.id)
    rt.store.set_progress(job.id, job.attempts, state.done, state.total, "items")
    for shard in range(state.shards):
        ctx.send_shard(job.id, shard, spec.template.type == "track")
    log.info("batch %s: %d items in %d shards sent", job.id, state.total, state.shards)


def _inputs(job: Job, spec: BatchSpec, rt: Runtime) -> Iterator[BatchItem]:
    inputs = spec.inputs
    if isinstance(inputs, ItemsInputs):
        yield from inputs.items
    elif isinstance(inputs, ManifestInputs):
        yield from _manifest(rt.media.fetch(inputs.manifest, job.tenant))
    else:
        list_s3 = rt.batch.list_s3
        if list_s3 is None:
            raise MediaNotFoundError("s3_prefix inputs need the s3 storage backend (SAMQ_STORAGE_BACKEND=s3)")
        bucket, prefix = inputs.bucket_and_prefix
        wanted = VIDEO_EXTENSIONS if spec.template.type == "track" else IMAGE_EXTENSIONS
        try:
            for key, _size in list_s3(bucket, prefix):
                if PurePosixPath(key).suffix.lower() in wanted:
                    yield BatchItem(s3=f"s3://{bucket}/{key}", name=key.removeprefix(prefix).lstrip("/") or key)
        except ObjectNotFoundError as e:
            raise MediaNotFoundError(f"bucket {bucket!r} is not readable by this server") from e
        except StorageError as e:
            raise StorageUnavailableError(f"could not list {inputs.s3_prefix}: {e}") from e


def _manifest(data: bytes) -> Iterator[BatchItem]:
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield BatchItem.model_validate_json(line)
        except ValidationError as e:
            raise InvalidManifestError(f"manifest line {number}: {first_problem(e)}") from e


def _write_shards(
    job: Job, items: Iterator[BatchItem], size: int, rt: Runtime, checkpoint: Checkpoint
) -> tuple[int, int]:
    """Stream the items into shard files of ``size`` lines, written at once (a round trip for all); returns (items,
    shards)."""
    max_items = rt.batch.limits.max_items
    total, shard, lines = 0, 0, []
    with rt.objects.writes(job) as writes:
        for item in items:
            if total == max_items:
                raise BatchTooLargeError(f"the inputs hold more than {max_items} items (SAMQ_BATCH_MAX_ITEMS)")
            lines.append(json.dumps({"index": total, "item": item.model_dump(exclude_none=True)}))
            total += 1
            if len(lines) == size:
                writes.add(shard_name(shard), "\n".join(lines).encode(), "application/x-ndjson")
                shard, lines = shard + 1, []
                checkpoint()
        if lines:
            writes.add(shard_name(shard), "\n".join(lines).encode(), "application/x-ndjson")
            shard += 1
    if total == 0:
        raise EmptyBatchError("the batch's inputs hold no items")
    return total, shard
