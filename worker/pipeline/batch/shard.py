"""One shard of a batch: its unrecorded items, each run as a child job and recorded once."""

from __future__ import annotations

import contextlib
import json
import logging
import time

from pydantic import ValidationError

from tasks.batch_specs import BatchItem, BatchSpec, item_spec
from tasks.batch_store import ItemError, ItemFile, ItemRecord
from tasks.errors import InvalidItemError, SamqError, TransientError, WorkerLostError
from tasks.everything_specs import EverythingSpec
from tasks.jobs import Job, JobStatus
from tasks.specs import ConceptSpec, SegmentSpec, first_problem
from tasks.track_specs import TrackSpec
from worker.pipeline.batch.finalize import finalize
from worker.pipeline.batch.layout import item_folder, shard_name
from worker.pipeline.context import Checkpoint, Finish, Runtime
from worker.pipeline.images import encode_together, encoder_of, read_ahead
from worker.pipeline.lease import JobCanceledError, Lease, LeaseLostError
from worker.pipeline.run import job_error, run

log = logging.getLogger(__name__)

ItemSpec = SegmentSpec | ConceptSpec | EverythingSpec | TrackSpec
GPU_ENCODE_BATCH = 8


def run_shard(job_id: str, shard: int, rt: Runtime) -> None:
    """Run the shard's unrecorded items; the call that completes the batch's last shard finalizes it."""
    ctx = rt.batch
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
            _Shard(job, job.spec, shard, rt, lease.checkpoint).run()
    except JobCanceledError:
        ctx.store.release_shard(job_id, shard)
        log.info("batch %s shard %d: stopped (%s)", job_id, shard, ctx.store.stopping(job_id))
        finalize(job_id, rt)
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
        finalize(job_id, rt)


class _Shard:
    """The shard's items in order, overlapped (``worker.pipeline.overlap``): while one item (or encode group)
    computes, the next one's reads run ahead and the previous one's files are written behind; an item is recorded
    once its files are stored, and the shard ends when every item is recorded."""

    def __init__(self, job: Job, spec: BatchSpec, shard: int, rt: Runtime, checkpoint: Checkpoint) -> None:
        self.job, self.spec, self.shard, self.ctx, self.checkpoint = job, spec, shard, rt.batch, checkpoint
        self.rt = rt
        self.retry: list[int] = []
        """Items of this round that failed transiently (recorded behind the model, so collected here)."""

    def run(self) -> None:
        raw = self.rt.objects.read(self.job, shard_name(self.shard))
        items = {entry["index"]: BatchItem.model_validate(entry["item"]) for entry in map(json.loads, raw.splitlines())}
        pending = self.ctx.store.pending(self.job.id, sorted(items))
        try:
            for round_ in range(self.rt.max_attempts + 1):
                if not pending:
                    return
                if round_:
                    self._sleep(self.rt.retry_backoff * 2 ** (round_ - 1))
                group = self._encode_group()
                groups = [
                    [(i, items[i]) for i in pending[start : start + group]] for start in range(0, len(pending), group)
                ]
                self._read_ahead(groups[0])
                for number, entries in enumerate(groups):
                    if number + 1 < len(groups):
                        self._read_ahead(groups[number + 1])
                    self._run_group(entries)
                self.rt.behind.drain()
                pending, self.retry = self.retry, []
        finally:
            self.rt.behind.drain()  # every item that ran is recorded before the shard ends, however it ends

    def _read_ahead(self, entries: list[tuple[int, BatchItem]]) -> None:
        """Start the reads of these items (on the I/O threads) while the items before them compute."""
        if self.spec.template.type == "track":
            return
        children = []
        for index, item in entries:
            with contextlib.suppress(ValidationError):  # the item's own run records it
                children.append(_child(self.job, index, item_spec(self.spec.template, item)))
        self.rt.objects.start(lambda: _read_ahead(children, self.rt))

    def _encode_group(self) -> int:
        """How many images go through the encoder together: the setting, else a batch on a GPU and one at a time on
        CPU (batched encoding measured slower per image there)."""
        template = self.spec.template
        if template.type == "track":
            return 1
        if self.ctx.limits.encode_batch is not None:
            return self.ctx.limits.encode_batch
        return GPU_ENCODE_BATCH if encoder_of(template, self.rt).device == "cuda" else 1

    def _run_group(self, group: list[tuple[int, BatchItem]]) -> None:
        """Run a group of items (images encoded together first); those to retry go to ``self.retry``."""
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
                self._failed(index, item, InvalidItemError(first_problem(e)))
        template = self.spec.template
        if len(ready) > 1 and template.type != "track":
            encode_together(self.job, template, [item.media for _, item, _, _ in ready], self.rt, self.checkpoint)
        for index, item, spec, tries in ready:
            self.checkpoint()
            self._run_item(index, item, spec, tries)

    def _run_item(self, index: int, item: BatchItem, spec: ItemSpec, tries: int) -> None:
        """Run one item's model work, then write and record it behind the next item's."""
        child = _child(self.job, index, spec)
        try:
            finish = run(child, self.rt, self.checkpoint, keep_logits=False)
        except (JobCanceledError, LeaseLostError, self.rt.timeout_error):
            raise
        except Exception as e:
            self._item_failed(index, item, e, tries)
            return
        self.rt.behind.submit(lambda: self._finish_item(index, item, finish, tries))

    def _finish_item(self, index: int, item: BatchItem, finish: Finish, tries: int) -> None:
        try:
            result = finish()
        except Exception as e:
            self._item_failed(index, item, e, tries)
            return
        folder = item_folder(index)
        record = ItemRecord(
            status="succeeded",
            name=item.display_name,
            document=f"{folder}/{result.document}",
            files=[ItemFile(name=f"{folder}/{f.name}", key=f.key, bytes=f.bytes) for f in result.files],
            timings=result.summary.get("timings"),
        )
        self._record(index, record)

    def _item_failed(self, index: int, item: BatchItem, e: Exception, tries: int) -> None:
        """Retry in the next round while attempts are left for a transient error; else record the failure."""
        error = job_error(e, f"batch {self.job.id} item {index}", "item")
        if isinstance(error, TransientError) and tries < self.rt.max_attempts:
            log.warning("batch %s item %d: %s (%s); will retry", self.job.id, index, error.code, error.message)
            self.retry.append(index)
        else:
            self._failed(index, item, error)

    def _failed(self, index: int, item: BatchItem, error: SamqError) -> None:
        log.info("batch %s item %d failed: %s: %s", self.job.id, index, error.code, error.message)
        record = ItemRecord(
            status="failed",
            name=item.display_name,
            input=item.media.model_dump(),
            error=ItemError(code=error.code, message=error.message),
        )
        counts = self._record(index, record)
        if counts is not None and counts[1] > self._max_failures():
            self.ctx.store.stop(self.job.id, "failure_rate")

    def _max_failures(self) -> int:
        state = self.ctx.store.state(self.job.id)
        return state.max_failures if state is not None else 0

    def _record(self, index: int, record: ItemRecord) -> tuple[int, int] | None:
        counts = self.ctx.store.record(self.job.id, index, record)
        if counts is not None and self.ctx.store.progress_due(self.job.id):
            state = self.ctx.store.state(self.job.id)
            if state is not None:
                self.rt.store.set_progress(self.job.id, state.attempt, sum(counts), state.total, "items")
        return counts

    def _sleep(self, seconds: float) -> None:
        """Back off before retrying transient failures, still stopping within a second when asked to."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.checkpoint()
            time.sleep(min(left, 1.0))


def _read_ahead(children: list[Job], rt: Runtime) -> None:
    try:
        for child in children:
            read_ahead(child, rt)
    except Exception:
        log.warning("reading ahead for batch items failed; they read for themselves", exc_info=True)


def _child(batch: Job, index: int, spec: ItemSpec) -> Job:
    """The item as a job that lives only in memory: its id is where its files go (``jobs/{batch}/items/{i}``)."""
    return Job(
        id=f"{batch.id}/{item_folder(index)}",
        tenant=batch.tenant,
        type=spec.type,
        model=spec.model.value,
        status=JobStatus.RUNNING,
        created_at=batch.created_at,
        attempts=batch.attempts,
        spec=spec,
    )
