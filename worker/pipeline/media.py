"""Fetching job media (uploads, configured S3 buckets, http URLs) as bytes, with size and time limits. Reads from
object storage ride out a short outage (``JobObjects``)."""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable

from storage import S3Reader, keys
from storage.base import ObjectNotFoundError, ObjectTooLargeError
from tasks import egress, pinned_http
from tasks.errors import (
    InvalidBase64Error,
    MediaNotFoundError,
    MediaTooLargeError,
)
from tasks.specs import Base64Image, S3Image, UploadImage, UrlImage
from tasks.uploads import UploadStore
from worker.pipeline.objects import JobObjects

KNOWN_DIGESTS = 4096
"""Uploads whose SHA-256 a worker process remembers (an upload's bytes never change: its id names them)."""


class _NoUpload(Exception):
    """No such upload (not remembered: ``functools.lru_cache`` keeps only what returns)."""


class MediaSource:
    """Turns a media reference into bytes, never more than ``max_bytes``."""

    def __init__(
        self,
        objects: JobObjects,
        s3_reader: S3Reader | None,
        *,
        max_bytes: int,
        timeout: float,
        total_seconds: float,
        allowed_networks: tuple[egress.Network, ...] = (),
        uploads: UploadStore | None = None,
    ) -> None:
        self._objects = objects
        self._uploads = uploads
        self._s3_reader = s3_reader
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._total_seconds = total_seconds
        self._allowed = allowed_networks
        self._sha256 = functools.lru_cache(maxsize=KNOWN_DIGESTS)(self._read_sha256)

    def fetch(self, ref: UrlImage | Base64Image | UploadImage | S3Image, tenant: str) -> bytes:
        if isinstance(ref, Base64Image):  # the API stores these as uploads; other producers may not
            return _decode_base64(ref.base64, self._max_bytes)
        if isinstance(ref, UploadImage):
            return self._from_store(lambda: self._objects.get(keys.upload(tenant, ref.upload), self._max_bytes), ref)
        if isinstance(ref, S3Image):
            if self._s3_reader is None:
                raise MediaNotFoundError("s3:// references need the s3 storage backend (SAMQ_STORAGE_BACKEND=s3)")
            bucket, _, key = ref.s3.removeprefix("s3://").partition("/")
            reader = self._s3_reader
            return self._from_store(
                lambda: self._objects.ride_out("read", ref.s3, lambda: reader(bucket, key, self._max_bytes)), ref
            )
        return self._from_url(ref.url)

    def digest(self, ref: UrlImage | Base64Image | UploadImage | S3Image, tenant: str) -> str | None:
        """An upload's SHA-256, from its record, which the API wrote from the very bytes stored: the embedding cache
        can be asked before the image is read, or instead. Remembered once read (a round trip less on every later
        job on the image); an upload that expired since only lets a job its embedding serves still run."""
        if not isinstance(ref, UploadImage) or self._uploads is None:
            return None
        try:
            return self._sha256(ref.upload, tenant)
        except _NoUpload:
            return None

    def _read_sha256(self, upload_id: str, tenant: str) -> str:
        assert self._uploads is not None
        upload = self._uploads.get(upload_id, tenant)
        if upload is None:
            raise _NoUpload(upload_id)
        return upload.sha256

    def _from_store(self, read: Callable[[], bytes], ref: UploadImage | S3Image) -> bytes:
        try:
            return read()
        except ObjectNotFoundError as e:
            raise MediaNotFoundError(f"{ref.model_dump_json()} does not exist") from e
        except ObjectTooLargeError as e:
            raise MediaTooLargeError(
                f"media is larger than {self._max_bytes} bytes (SAMQ_WORKER_MAX_MEDIA_BYTES)"
            ) from e

    def _from_url(self, url: str) -> bytes:
        return pinned_http.fetch(
            url,
            allowed=self._allowed,
            max_bytes=self._max_bytes,
            connect_timeout=self._timeout,
            read_timeout=self._timeout,
            total_seconds=self._total_seconds,
        )


def _decode_base64(text: str, max_bytes: int) -> bytes:
    if len(text) * 3 // 4 > max_bytes:
        raise MediaTooLargeError(f"base64 image is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise InvalidBase64Error(f"image.base64 is not valid base64: {e}") from e
