"""Batch jobs: one template over many inputs, fanned out in shards on the ``bulk`` queue.

1. ``expand`` (the batch job's own attempt): list the inputs (an S3 prefix page by page, the request's items, or
   an uploaded JSONL manifest) into shard files under ``jobs/{id}/shards/``, record the batch's shape in Redis
   (``tasks.batch_store``) and send one task per shard. The job stays ``running``; its lease is handed off.
2. ``run_shard``: under a shard lease, every item not recorded yet runs as a child job (in memory only, its
   files under ``jobs/{id}/items/{index}/``) through the same pipeline functions as a single job. Images of a
   shard go through the encoder together first. An item's failure is recorded with its code; transient ones are
   retried, and every attempt (a crash included) counts toward the attempt cap.
3. ``finalize``: run by the shard that completes the last shard (exactly one), or by the reconcile pass when that
   finalizer was lost. It writes ``result.json`` (counts and the failures list), ``items.jsonl`` and, when asked,
   ``coco.json``, then ends the job: succeeded, failed (``failure_rate_exceeded``) or canceled.
4. ``reconcile`` (every worker's housekeeping timer): re-sends shards whose worker died, stops canceled batches,
   and finalizes batches whose finalizer was lost.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import ValidationError

from storage import ObjectNotFoundError, StorageError, keys
from tasks.batch_store import BatchContext
from tasks.coco import CocoWriter
from tasks.errors import (
    BatchTooLargeError,
    EmptyBatchError,
    FailureRateExceededError,
    InvalidItemError,
    InvalidManifestError,
    MediaNotFoundError,
    SamqError,
    StorageUnavailableError,
    TransientError,
    WorkerLostError,
)
from tasks.jobs import Job, JobResult, JobStatus, ResultFile
from tasks.lease import JobCanceledError, Lease, LeaseLostError
from tasks.pipeline import (
    CONCEPT_EMBEDDINGS,
    Checkpoint,
    Runtime,
    run_concept,
    run_segment,
    track_context,
)
from tasks.specs import (
    BatchItem,
    BatchSpec,
    ConceptSpec,
    ItemsInputs,
    ManifestInputs,
    MediaRef,
    SegmentSpec,
    TrackSpec,
    item_spec,
)
from tasks.tracking import run_track
from worker.images import decode_image

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi"})
RESULT_DOCUMENT = "result.json"
ITEMS_INDEX = "items.jsonl"
COCO_EXPORT = "coco.json"
SUMMARY_FAILURES = 20
"""Failures listed in the job object's summary; ``result.json`` lists them all."""

ItemSpec = SegmentSpec | ConceptSpec | TrackSpec
GPU_ENCODE_BATCH = 8


# ---- 1. expansion -------------------------------------------------------------------------------------------


def expand(job: Job, spec: BatchSpec, rt: Runtime, ctx: BatchContext, checkpoint: Checkpoint) -> None:
    """Write the shard files, open the batch and send its shards. Idempotent: a re-run after the attempt died
    keeps what an earlier attempt recorded and only re-sends the shards."""
    state = ctx.store.state(job.id)
    if state is None:
        videos = spec.template.type == "track"
        size = spec.shard_size or (1 if videos else ctx.limits.shard_size)
        total, shards = _write_shards(job, _inputs(job, spec, rt, ctx), size, rt, ctx.limits.max_items, checkpoint)
        max_failures = math.floor(spec.max_failure_rate * total + 1e-9)
        ctx.store.open(job.id, job.attempts, total, shards, max_failures)
    else:
        ctx.store.open(job.id, job.attempts, state.total, state.shards, state.max_failures)
    state = ctx.store.expect(job.id)
    rt.store.set_progress(job.id, job.attempts, state.done, state.total, "items")
    for shard in range(state.shards):
        ctx.send_shard(job.id, shard, spec.template.type == "track")
    log.info("batch %s: %d items in %d shards sent", job.id, state.total, state.shards)


def _inputs(job: Job, spec: BatchSpec, rt: Runtime, ctx: BatchContext) -> Iterator[BatchItem]:
    inputs = spec.inputs
    if isinstance(inputs, ItemsInputs):
        yield from inputs.items
    elif isinstance(inputs, ManifestInputs):
        yield from _manifest(rt.media.fetch(inputs.manifest, job.tenant))
    else:
        if ctx.list_s3 is None:
            raise MediaNotFoundError("s3_prefix inputs need the s3 storage backend (SAMQ_STORAGE_BACKEND=s3)")
        bucket, prefix = inputs.bucket_and_prefix
        wanted = VIDEO_EXTENSIONS if spec.template.type == "track" else IMAGE_EXTENSIONS
        try:
            for key, _size in ctx.list_s3(bucket, prefix):
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
            raise InvalidManifestError(f"manifest line {number}: {_validation_message(e)}") from e


def _write_shards(
    job: Job, items: Iterator[BatchItem], size: int, rt: Runtime, max_items: int, checkpoint: Checkpoint
) -> tuple[int, int]:
    """Stream the items into shard files of ``size`` lines; returns (items, shards)."""
    total, shard, lines = 0, 0, []
    for item in items:
        if total == max_items:
            raise BatchTooLargeError(f"the inputs hold more than {max_items} items (SAMQ_BATCH_MAX_ITEMS)")
        lines.append(json.dumps({"index": total, "item": item.model_dump(exclude_none=True)}))
        total += 1
        if len(lines) == size:
            _put(rt, keys.job_file(job.tenant, job.id, _shard_name(shard)), "\n".join(lines).encode())
            shard, lines = shard + 1, []
            checkpoint()
    if lines:
        _put(rt, keys.job_file(job.tenant, job.id, _shard_name(shard)), "\n".join(lines).encode())
        shard += 1
    if total == 0:
        raise EmptyBatchError("the batch's inputs hold no items")
    return total, shard


def _shard_name(shard: int) -> str:
    return f"shards/{shard:06d}.jsonl"


# ---- 2. shards ----------------------------------------------------------------------------------------------


def run_shard(job_id: str, shard: int, rt: Runtime, ctx: BatchContext) -> None:
    """Run the shard's unrecorded items; the call that completes the batch's last shard finalizes it."""
    job = rt.store.get(job_id)
    if job is None or job.status.is_terminal or not isinstance(job.spec, BatchSpec):
        return
    if not ctx.store.claim_shard(job_id, shard):
        log.info("batch %s shard %d: done or running elsewhere; skipped", job_id, shard)
        return
    lease = Lease(
        f"{job_id}:{shard}",
        renew=lambda: bool(ctx.store.renew_shard(job_id, shard)),
        canceled=lambda: ctx.store.stopping(job_id) is not None,
        interval=rt.lease_interval,
    )
    try:
        with lease:
            _Shard(job, job.spec, shard, rt, ctx, lease.checkpoint).run()
    except JobCanceledError:
        ctx.store.release_shard(job_id, shard)
        log.info("batch %s shard %d: stopped (%s)", job_id, shard, ctx.store.stopping(job_id))
        finalize(job_id, rt, ctx)
        return
    except LeaseLostError:
        log.warning("batch %s shard %d: lease lost; another worker runs it", job_id, shard)
        return
    except rt.timeout_error:
        log.warning("batch %s shard %d: out of time; sent again for its remaining items", job_id, shard)
        ctx.store.release_shard(job_id, shard)
        ctx.send_shard(job_id, shard, job.spec.template.type == "track")
        return
    if ctx.store.complete_shard(job_id, shard):
        finalize(job_id, rt, ctx)


class _Prefetched:
    """Media fetched for the shard's batched encode, handed to the items' own runs (fetched once)."""

    def __init__(self, rt: Runtime) -> None:
        self._media = rt.media
        self._fetched: dict[str, bytes] = {}

    def keep(self, ref: MediaRef, data: bytes) -> None:
        self._fetched[ref.model_dump_json()] = data

    def fetch(self, ref: Any, tenant: str) -> bytes:
        data = self._fetched.pop(ref.model_dump_json(), None)
        return data if data is not None else self._media.fetch(ref, tenant)


class _Shard:
    def __init__(
        self, job: Job, spec: BatchSpec, shard: int, rt: Runtime, ctx: BatchContext, checkpoint: Checkpoint
    ) -> None:
        self.job, self.spec, self.shard, self.ctx, self.checkpoint = job, spec, shard, ctx, checkpoint
        self.prefetched = _Prefetched(rt)
        self.rt = dataclasses.replace(rt, media=self.prefetched)

    def run(self) -> None:
        raw = self.rt.objects.get(keys.job_file(self.job.tenant, self.job.id, _shard_name(self.shard)))
        items = {entry["index"]: BatchItem.model_validate(entry["item"]) for entry in map(json.loads, raw.splitlines())}
        pending = self.ctx.store.pending(self.job.id, sorted(items))
        for round_ in range(self.rt.max_attempts + 1):
            if not pending:
                return
            if round_:
                self._sleep(self.rt.retry_backoff * 2 ** (round_ - 1))
            retry: list[int] = []
            group = self._encode_group()
            for start in range(0, len(pending), group):
                retry += self._run_group([(i, items[i]) for i in pending[start : start + group]])
            pending = retry

    def _encode_group(self) -> int:
        """How many images go through the encoder together: the setting, else a batch on a GPU and one at a time on
        CPU (batched encoding measured slower per image there)."""
        if self.spec.template.type == "track":
            return 1
        if self.ctx.limits.encode_batch is not None:
            return self.ctx.limits.encode_batch
        return GPU_ENCODE_BATCH if self._encoder().device == "cuda" else 1

    def _encoder(self) -> Any:
        """The template's image encoder (the loaded runner)."""
        template = self.spec.template
        if template.type == "concept":
            return self.rt.models.get_concept(template.model.value)
        return self.rt.models.get(template.model.value)

    def _run_group(self, group: list[tuple[int, BatchItem]]) -> list[int]:
        """Run a group of items (images encoded together first); returns those to retry."""
        ready: list[tuple[int, BatchItem, ItemSpec, int]] = []
        for index, item in group:
            self.checkpoint()
            tries = self.ctx.store.try_item(self.job.id, index)
            if tries > self.rt.max_attempts:
                message = f"the item lost its worker on all {self.rt.max_attempts} attempts (SAMQ_MAX_ATTEMPTS)"
                self._failed(index, item, WorkerLostError(message))
                continue
            try:
                ready.append((index, item, item_spec(self.spec.template, item), tries))
            except ValidationError as e:
                self._failed(index, item, InvalidItemError(_validation_message(e)))
        if len(ready) > 1:
            self._encode_together([(item, spec) for _, item, spec, _ in ready])
        retry: list[int] = []
        for index, item, spec, tries in ready:
            self.checkpoint()
            if self._run_item(index, item, spec, tries):
                retry.append(index)
        return retry

    def _run_item(self, index: int, item: BatchItem, spec: ItemSpec, tries: int) -> bool:
        """Run one item and record its outcome; True when it failed transiently and has attempts left."""
        child = _child(self.job, index, spec)
        try:
            if isinstance(spec, SegmentSpec):
                result = run_segment(child, spec, self.rt, self.checkpoint, keep_logits=False)
            elif isinstance(spec, ConceptSpec):
                result = run_concept(child, spec, self.rt, self.checkpoint)
            else:
                result = run_track(child, spec, track_context(child, spec, self.rt), self.checkpoint)
        except TransientError as e:
            if tries < self.rt.max_attempts:
                log.warning("batch %s item %d: %s (%s); will retry", self.job.id, index, e.code, e.message)
                return True
            self._failed(index, item, e)
        except SamqError as e:
            self._failed(index, item, e)
        except (JobCanceledError, LeaseLostError, self.rt.timeout_error):
            raise
        except Exception:
            log.exception("batch %s item %d: unexpected error", self.job.id, index)
            self._failed(index, item, SamqError("internal error while running the item; see the worker log"))
        else:
            folder = _item_folder(index)
            self._record(
                index,
                {
                    "status": "succeeded",
                    "name": item.display_name,
                    "document": f"{folder}/{result.document}",
                    "files": [{"name": f"{folder}/{f.name}", "key": f.key, "bytes": f.bytes} for f in result.files],
                    **({"timings": result.summary["timings"]} if "timings" in result.summary else {}),
                },
            )
        return False

    def _encode_together(self, items: Sequence[tuple[BatchItem, ItemSpec]]) -> None:
        """Fetch, decode and encode the group's images in one encoder call, into the embedding cache, where each
        item's own run finds them. Any error here is left for that run to meet again and record."""
        template = self.spec.template
        encoder = self._encoder()
        kind = CONCEPT_EMBEDDINGS if template.type == "concept" else template.model.value
        cache_keys, images = [], []
        for item, _spec in items:
            try:
                data = self.rt.media.fetch(item.media, self.job.tenant)
                self.prefetched.keep(item.media, data)
                key = keys.embedding(self.job.tenant, kind, encoder.image_size, hashlib.sha256(data).hexdigest())
                if key in cache_keys or self.rt.embeddings.get(key) is not None:
                    continue
                images.append(decode_image(data, self.rt.max_image_pixels))
                cache_keys.append(key)
            except SamqError:
                continue
        if len(images) < 2:
            return
        self.checkpoint()
        for key, embedding in zip(cache_keys, encoder.encode_batch(images), strict=True):
            self.rt.embeddings.put(key, embedding)

    def _failed(self, index: int, item: BatchItem, error: SamqError) -> None:
        log.info("batch %s item %d failed: %s: %s", self.job.id, index, error.code, error.message)
        record = {
            "status": "failed",
            "name": item.display_name,
            "input": item.media.model_dump(),
            "error": {"code": error.code, "message": error.message},
        }
        counts = self._record(index, record)
        if counts is not None and counts[1] > self._state_max_failures():
            self.ctx.store.stop(self.job.id, "failure_rate")

    def _record(self, index: int, record: dict[str, Any]) -> tuple[int, int] | None:
        counts: tuple[int, int] | None = self.ctx.store.record(self.job.id, index, record)
        if counts is not None and self.ctx.store.progress_due(self.job.id):
            state = self.ctx.store.state(self.job.id)
            if state is not None:
                self.rt.store.set_progress(self.job.id, state.attempt, sum(counts), state.total, "items")
        return counts

    def _state_max_failures(self) -> int:
        state = self.ctx.store.state(self.job.id)
        return state.max_failures if state is not None else 0

    def _sleep(self, seconds: float) -> None:
        """Back off before retrying transient failures, still stopping within a second when asked to."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.checkpoint()
            time.sleep(min(left, 1.0))


def _child(batch: Job, index: int, spec: ItemSpec) -> Job:
    """The item as a job that lives only in memory: its id is where its files go (``jobs/{batch}/items/{i}``)."""
    return Job(
        id=f"{batch.id}/{_item_folder(index)}",
        tenant=batch.tenant,
        type=spec.type,
        model=spec.model.value,
        status=JobStatus.RUNNING,
        created_at=batch.created_at,
        attempts=batch.attempts,
        spec=spec,
    )


def _item_folder(index: int) -> str:
    return f"items/{index:06d}"


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where + ': ' if where else ''}{first['msg']}"


# ---- 3. finalize --------------------------------------------------------------------------------------------


def finalize(job_id: str, rt: Runtime, ctx: BatchContext) -> None:
    """End the batch once all shards are done (or it was stopped); a no-op for anyone but the one claimant."""
    job = rt.store.get(job_id)
    if job is None or job.status.is_terminal:
        ctx.store.close(job_id)
        return
    state = ctx.store.state(job_id)
    if state is None or not isinstance(job.spec, BatchSpec):
        return
    if state.stop is None and rt.store.cancel_requested(job_id):
        ctx.store.stop(job_id, "canceled")
        state = ctx.store.expect(job_id)
    if not (state.complete or state.stop) or not ctx.store.claim_finalizer(job_id):
        return
    state = ctx.store.expect(job_id)  # counts are final now: no shard records after completing or stopping
    result = _write_outputs(job, job.spec, state.total, rt, ctx)
    summary = result.summary
    rt.store.set_progress(job_id, state.attempt, summary["succeeded"] + summary["failed"], state.total, "items")
    if state.stop == "canceled":
        ended = rt.store.cancel_running(job_id, state.attempt, result)
    elif summary["failed"] > state.max_failures:
        rate = job.spec.max_failure_rate
        message = (
            f"{summary['failed']} of {state.total} items failed, more than max_failure_rate {rate:g} allows "
            f"({state.max_failures}); see result.json for each failure"
        )
        ended = rt.store.fail(job_id, state.attempt, FailureRateExceededError(message), result)
    else:
        ended = rt.store.succeed(job_id, state.attempt, result)
    if not ended:  # the batch job is between attempts (its expanding worker was lost): the reconcile retries
        log.warning("batch %s: attempt %d no longer owns the job; finalizing again later", job_id, state.attempt)
        ctx.store.release_finalizer(job_id)
        return
    ctx.store.close(job_id)
    log.info("batch %s finalized: %s", job_id, json.dumps({k: summary[k] for k in ("succeeded", "failed", "not_run")}))


def _write_outputs(job: Job, spec: BatchSpec, total: int, rt: Runtime, ctx: BatchContext) -> JobResult:
    """``items.jsonl`` (every item's outcome), ``coco.json`` (when asked) and ``result.json``, streamed."""
    counts = {"succeeded": 0, "failed": 0, "not_run": 0}
    failures: list[dict[str, Any]] = []
    codes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="samq-batch-") as tmp:
        index_path, coco_path = Path(tmp) / ITEMS_INDEX, Path(tmp) / COCO_EXPORT
        coco = CocoWriter(coco_path) if spec.export else None
        with index_path.open("w") as index_file:
            for index, record, document in _with_documents(rt, ctx, job.id, total, coco is not None):
                status = "not_run" if record is None else record["status"]
                counts[status] += 1
                line: dict[str, Any] = {"index": index, "status": status}
                if record is not None:
                    line |= {k: v for k, v in record.items() if k not in ("status", "files")}
                    line["files"] = [f["name"] for f in record.get("files", [])]
                if status == "failed":
                    failures.append({"index": index} | {k: line[k] for k in ("name", "input", "error")})
                    codes[line["error"]["code"]] = codes.get(line["error"]["code"], 0) + 1
                if coco is not None and document is not None:
                    image = document["image"]
                    coco.add_image(
                        record["name"] if record else str(index), image["width"], image["height"], document["instances"]
                    )
                index_file.write(json.dumps(line) + "\n")
                if index % 1000 == 999:
                    ctx.store.renew_finalizer(job.id)
        files = [_put_file(rt, job, ITEMS_INDEX, index_path, "application/x-ndjson")]
        exports: dict[str, str] = {}
        if coco is not None:
            coco.close()
            files.append(_put_file(rt, job, COCO_EXPORT, coco_path, "application/json"))
            exports["coco"] = COCO_EXPORT
    document = {
        "total": total,
        **counts,
        "failure_codes": codes,
        "failures": failures,
        "items": ITEMS_INDEX,
        "exports": exports,
    }
    data = json.dumps(document, separators=(",", ":")).encode()
    key = keys.job_file(job.tenant, job.id, RESULT_DOCUMENT)
    _put(rt, key, data, "application/json")
    files.insert(0, ResultFile(name=RESULT_DOCUMENT, key=key, bytes=len(data), content_type="application/json"))
    summary = {
        "total": total,
        **counts,
        "failure_codes": codes,
        "failures": failures[:SUMMARY_FAILURES],
        "exports": exports,
    }
    return JobResult(files=files, summary=summary, document=RESULT_DOCUMENT)


def _with_documents(
    rt: Runtime, ctx: BatchContext, job_id: str, total: int, read: bool
) -> Iterator[tuple[int, dict[str, Any] | None, dict[str, Any] | None]]:
    """Every item's record in order, with its result document when ``read`` (fetched 8 at a time, in order)."""

    def document(record: dict[str, Any] | None) -> dict[str, Any] | None:
        if not read or record is None or record["status"] != "succeeded":
            return None
        key = next(f["key"] for f in record["files"] if f["name"] == record["document"])
        try:
            loaded: dict[str, Any] = json.loads(rt.objects.get(key))
        except StorageError as e:
            raise StorageUnavailableError(f"could not read {key}: {e}") from e
        return loaded

    records = ctx.store.items(job_id, total)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="samq-export") as pool:
        while page := list(itertools.islice(records, 64)):
            for (index, record), doc in zip(page, pool.map(lambda e: document(e[1]), page), strict=True):
                yield index, record, doc


def _put(rt: Runtime, key: str, data: bytes, content_type: str = "application/x-ndjson") -> None:
    try:
        rt.objects.put(key, data, content_type)
    except StorageError as e:
        raise StorageUnavailableError(f"could not write {key}: {e}") from e


def _put_file(rt: Runtime, job: Job, name: str, path: Path, content_type: str) -> ResultFile:
    key = keys.job_file(job.tenant, job.id, name)
    try:
        rt.objects.put_file(key, path, content_type)
    except StorageError as e:
        raise StorageUnavailableError(f"could not write {name}: {e}") from e
    return ResultFile(name=name, key=key, bytes=path.stat().st_size, content_type=content_type)
