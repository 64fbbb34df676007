"""Upload records: what ``{"upload": "upl_…"}`` media references point at."""

from __future__ import annotations

from datetime import datetime

import redis
from pydantic import BaseModel, ConfigDict

from tasks.redis_keys import upload_key


class Upload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    tenant: str
    key: str
    bytes: int
    sha256: str
    content_type: str
    created_at: datetime
    width: int | None = None
    height: int | None = None
    """Read from the image header at upload time (None for anything that is not a readable image), so that prompts
    outside the image and oversized images are refused at submit."""
    oversized: bool = False
    """The header announces more pixels than Pillow ever decodes (its decompression-bomb limit)."""


class UploadStore:
    """Upload metadata in Redis (the bytes live in object storage under ``key``)."""

    def __init__(self, client: redis.Redis, ttl_seconds: int) -> None:
        self._redis = client
        self._ttl = ttl_seconds

    def add(self, upload: Upload) -> None:
        self._redis.set(upload_key(upload.id), upload.model_dump_json(), ex=self._ttl)

    def get(self, upload_id: str, tenant: str) -> Upload | None:
        raw = self._redis.get(upload_key(upload_id))
        if raw is None:
            return None
        upload = Upload.model_validate_json(raw)
        return upload if upload.tenant == tenant else None
