"""Ending a batch: ``items.jsonl``, ``coco.json`` (when asked) and ``result.json``, then the job's final state."""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from tasks.batch_specs import BatchItem, BatchSpec, PrefixInputs
from tasks.batch_store import ItemRecord
from tasks.errors import FailureRateExceededError
from tasks.jobs import Job, JobResult
from tasks.names import RESULT_DOCUMENT
from worker.pipeline.batch.layout import COCO_EXPORT, ITEMS_INDEX, shard_name
from worker.pipeline.categories import CategoryTable, batch_categories
from worker.pipeline.coco import CocoWriter
from worker.pipeline.context import Runtime

log = logging.getLogger(__name__)

SUMMARY_FAILURES = 20
"""Failures listed in the job object's summary; ``result.json`` lists them all."""


def finalize(job_id: str, rt: Runtime) -> None:
    """End the batch once all shards are done (or it was stopped); a no-op for anyone but the one claimant."""
    ctx = rt.batch
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
    result = _write_outputs(job, job.spec, state.total, state.shards, rt)
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


def _write_outputs(job: Job, spec: BatchSpec, total: int, shards: int, rt: Runtime) -> JobResult:
    """``items.jsonl`` (every item's outcome), ``coco.json`` (when asked) and ``result.json``, streamed."""
    counts = {"succeeded": 0, "failed": 0, "not_run": 0}
    failures: list[dict[str, Any]] = []
    codes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="samq-batch-") as tmp:
        index_path, coco_path = Path(tmp) / ITEMS_INDEX, Path(tmp) / COCO_EXPORT
        coco = CocoWriter(coco_path, _categories(job, spec, shards, rt)) if spec.export else None
        with index_path.open("w") as index_file:
            for index, record, document in _with_documents(rt, job.id, total, coco is not None):
                line = _index_line(index, record)
                counts[line["status"]] += 1
                if record is not None and record.error is not None:
                    failures.append({"index": index} | {k: line[k] for k in ("name", "input", "error")})
                    codes[record.error.code] = codes.get(record.error.code, 0) + 1
                if coco is not None and document is not None:
                    image = document["image"]
                    name = record.name if record else str(index)
                    coco.add_image(name, image["width"], image["height"], document["instances"])
                index_file.write(json.dumps(line) + "\n")
                if index % 1000 == 999:
                    rt.batch.store.renew_finalizer(job.id)
        # All written at once (the job's result, committed after, is what names them).
        writing = [
            rt.objects.start(lambda: rt.objects.write_file(job, ITEMS_INDEX, index_path, "application/x-ndjson"))
        ]
        exports: dict[str, str] = {}
        if coco is not None:
            coco.close()
            writing.append(
                rt.objects.start(lambda: rt.objects.write_file(job, COCO_EXPORT, coco_path, "application/json"))
            )
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
        try:
            files = [rt.objects.write(job, RESULT_DOCUMENT, data, "application/json")]
        finally:
            wait(writing)  # the temporary files are read until then
        files += [written.result() for written in writing]
    summary = {
        "total": total,
        **counts,
        "failure_codes": codes,
        "failures": failures[:SUMMARY_FAILURES],
        "exports": exports,
    }
    return JobResult(files=files, summary=summary, document=RESULT_DOCUMENT)


def _categories(job: Job, spec: BatchSpec, shards: int, rt: Runtime) -> CategoryTable:
    """The batch's category table, from its template and every item's own prompts (read back from the shard files,
    in item order), whatever the items' outcomes."""
    template = spec.template
    if template.type == "track":
        raise TypeError(f"batch {job.id}: a track template has no category table")

    def items() -> Iterator[BatchItem]:
        if isinstance(spec.inputs, PrefixInputs):  # its items carry no prompts
            return
        for shard in range(shards):
            for line in rt.objects.read(job, shard_name(shard)).splitlines():
                yield BatchItem.model_validate(json.loads(line)["item"])

    return batch_categories(template, items())


def _index_line(index: int, record: ItemRecord | None) -> dict[str, Any]:
    """An item's line of ``items.jsonl``: its record, with its files' names only."""
    if record is None:
        return {"index": index, "status": "not_run"}
    fields = record.model_dump(mode="json", exclude_none=True, exclude={"status", "files"})
    return {"index": index, "status": record.status, **fields, "files": [f.name for f in record.files]}


def _with_documents(
    rt: Runtime, job_id: str, total: int, read: bool
) -> Iterator[tuple[int, ItemRecord | None, dict[str, Any] | None]]:
    """Every item's record in order, with its result document when ``read`` (fetched 8 at a time, in order)."""

    def document(record: ItemRecord | None) -> dict[str, Any] | None:
        if not read or record is None or record.status != "succeeded":
            return None
        loaded: dict[str, Any] = json.loads(rt.objects.get(record.document_key))
        return loaded

    records = rt.batch.store.items(job_id, total)
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="samq-export") as pool:
        while page := list(itertools.islice(records, 64)):
            for (index, record), doc in zip(page, pool.map(lambda e: document(e[1]), page), strict=True):
                yield index, record, doc
