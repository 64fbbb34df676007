"""Batch jobs: one template over many inputs, fanned out in shards on the ``bulk`` queue.

1. ``expand`` (the batch job's own attempt): list the inputs (an S3 prefix page by page, the request's items, or
   an uploaded JSONL manifest) into shard files under ``jobs/{id}/shards/``, record the batch's shape in Redis
   (``tasks.batch_store``) and send one task per shard. The job stays ``running``; its lease is handed off.
2. ``shard.run_shard``: under a shard lease, every item not recorded yet runs as a child job (in memory only, its
   files under ``jobs/{id}/items/{index}/``) through the same dispatch and outcome handling as a single job
   (``worker.pipeline.attempt``). Images of a shard go through the encoder together first. An item's failure is
   recorded with its code; transient ones are retried, and every attempt (a crash included) counts toward the
   attempt cap.
3. ``finalize``: run by the shard that completes the last shard (exactly one), or by the reconcile pass when that
   finalizer was lost. It writes ``result.json`` (counts and the failures list), ``items.jsonl`` and, when asked,
   ``coco.json``, then ends the job: succeeded, failed (``failure_rate_exceeded``) or canceled.
4. ``reconcile`` (every worker's housekeeping timer): re-sends shards whose worker died, stops canceled batches,
   and finalizes batches whose finalizer was lost.
"""
