"""Where a batch's files live under ``jobs/{id}/``: its shard files, its items' folders and its outputs."""

from __future__ import annotations

ITEMS_INDEX = "items.jsonl"
COCO_EXPORT = "coco.json"


def shard_name(shard: int) -> str:
    """One shard's inputs, a JSONL line per item: ``{"index": i, "item": {...}}``."""
    return f"shards/{shard:06d}.jsonl"


def item_folder(index: int) -> str:
    """An item's folder: its child job's id is ``{batch id}/{item_folder}``, so its files land there."""
    return f"items/{index:06d}"
