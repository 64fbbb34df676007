"""Object storage: one interface, a local-filesystem and an S3 backend, and the key layout."""

from __future__ import annotations

from collections.abc import Callable

from storage.base import (
    ObjectNotFoundError,
    ObjectStore,
    PresignedUrl,
    StorageError,
    StorageUnavailableError,
)
from storage.local import LocalStore, load_or_create_signing_key
from storage.settings import StorageSettings

__all__ = [
    "ObjectNotFoundError",
    "ObjectStore",
    "PresignedUrl",
    "S3Reader",
    "StorageError",
    "StorageSettings",
    "StorageUnavailableError",
    "make_s3_reader",
    "make_store",
]


def make_store(settings: StorageSettings) -> ObjectStore:
    """The backend ``settings`` names. The local one creates its root and signing key; s3 connects lazily."""
    if settings.backend == "s3":
        from storage.s3 import S3Store, make_s3_client, make_transfer_config  # boto3 only when used

        return S3Store(make_s3_client(settings), settings.s3_bucket, make_transfer_config(settings))
    return LocalStore(settings.dir, settings.public_url, load_or_create_signing_key(settings.dir))


S3Reader = Callable[[str, str, int], bytes]
"""(bucket, key, max_bytes) → bytes for ``{"s3": "s3://bucket/key"}`` media references."""


def make_s3_reader(settings: StorageSettings) -> S3Reader | None:
    """A reader limited to ``s3_read_buckets``; None without the s3 backend.

    The results bucket is not among them: it holds every tenant's data under tenant prefixes.
    """
    if settings.backend != "s3":
        return None
    from storage.s3 import S3Store, make_s3_client, make_transfer_config

    store = S3Store(make_s3_client(settings), settings.s3_bucket, make_transfer_config(settings))
    readable = settings.readable_buckets

    def read(bucket: str, key: str, max_bytes: int) -> bytes:
        if bucket not in readable:  # answered like a missing object: no probing of other buckets
            raise ObjectNotFoundError(f"s3://{bucket}/{key}")
        return store.for_bucket(bucket).get(key, max_bytes)

    return read
