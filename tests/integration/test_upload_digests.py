"""A worker remembers uploads' SHA-256 (``MediaSource.digest``), against a real Redis: read once, per tenant, and
never a missing upload."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.local import LocalStore
from tasks.broker import connect
from tasks.redis_keys import upload_key
from tasks.settings import QueueSettings
from tasks.specs import UploadImage, UrlImage
from tasks.uploads import Upload, UploadStore
from worker.pipeline.media import MediaSource
from worker.pipeline.objects import JobObjects


def _upload(upload_id: str, tenant: str, sha256: str) -> Upload:
    return Upload(
        id=upload_id,
        tenant=tenant,
        key=f"{tenant}/uploads/{upload_id}",
        bytes=1,
        sha256=sha256,
        content_type="image/png",
        created_at=datetime.now(UTC),
    )


@pytest.fixture
def uploads(redis_url: str) -> UploadStore:
    client = connect(QueueSettings(redis_url=redis_url))
    client.flushdb()
    return UploadStore(client, ttl_seconds=3600)


def _media(uploads: UploadStore, tmp_path: Path) -> MediaSource:
    objects = JobObjects(LocalStore(tmp_path, "http://samq.test", b"k" * 32))
    return MediaSource(objects, None, max_bytes=1 << 20, timeout=5, total_seconds=5, uploads=uploads)


def test_an_uploads_hash_is_read_once_then_remembered(
    uploads: UploadStore, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = _media(uploads, tmp_path)
    uploads.add(_upload("upl_1", "t1", "a" * 64))
    reads: list[str] = []
    get = UploadStore.get
    monkeypatch.setattr(UploadStore, "get", lambda self, i, t: reads.append(i) or get(self, i, t))  # type: ignore[func-returns-value]
    ref = UploadImage(upload="upl_1")
    assert media.digest(ref, "t1") == "a" * 64
    assert media.digest(ref, "t1") == "a" * 64
    assert reads == ["upl_1"]
    connect(QueueSettings(redis_url=redis_url)).delete(upload_key("upl_1"))  # expired: its embedding still serves
    assert media.digest(ref, "t1") == "a" * 64


def test_another_tenant_and_a_missing_upload_get_no_hash_and_are_not_remembered(
    uploads: UploadStore, tmp_path: Path
) -> None:
    media = _media(uploads, tmp_path)
    uploads.add(_upload("upl_1", "t1", "a" * 64))
    assert media.digest(UploadImage(upload="upl_1"), "t2") is None
    assert media.digest(UploadImage(upload="upl_2"), "t1") is None
    uploads.add(_upload("upl_2", "t1", "b" * 64))  # not remembered as missing
    assert media.digest(UploadImage(upload="upl_2"), "t1") == "b" * 64
    assert media.digest(UrlImage(url="https://example.com/a.png"), "t1") is None
