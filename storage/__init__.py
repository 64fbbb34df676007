"""Object storage: one interface, a local-filesystem and an S3 backend, and the key layout."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.base import (
    BackendUnavailableError,
    ObjectNotFoundError,
    ObjectStore,
    ObjectTooLargeError,
    PresignedUrl,
    StorageError,
)
from storage.local import LocalStore, load_or_create_signing_key
from storage.settings import StorageSettings

if TYPE_CHECKING:
    from storage.s3 import S3Store

__all__ = [
    "BackendUnavailableError",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectTooLargeError",
    "PresignedUrl",
    "S3Lister",
    "S3Reader",
    "Storage",
    "StorageError",
    "StorageSettings",
    "make_s3_lister",
    "make_s3_reader",
    "make_store",
    "open_storage",
]


def make_store(settings: StorageSettings) -> ObjectStore:
    """The backend ``settings`` names. The local one creates its root and signing key; s3 connects lazily."""
    if settings.backend == "s3":
        return _s3_store(settings)
    return LocalStore(settings.dir, settings.public_url, load_or_create_signing_key(settings.dir))


S3Reader = Callable[[str, str, int], bytes]
"""(bucket, key, max_bytes) → bytes for ``{"s3": "s3://bucket/key"}`` media references."""

S3Lister = Callable[[str, str], Iterator[tuple[str, int]]]
"""(bucket, prefix) → (key, size) pairs, in key order, for ``s3://bucket/prefix`` batch inputs."""


@dataclass(frozen=True)
class Storage:
    """What one process reads and writes: the results store and, with the s3 backend, the reader and lister of
    ``s3_read_buckets``, all on one S3 client, whose pool keeps connections alive between their calls."""

    objects: ObjectStore
    read_s3: S3Reader | None = None
    list_s3: S3Lister | None = None


def open_storage(settings: StorageSettings) -> Storage:
    """The process's :class:`Storage` for ``settings`` (built once per process, after any fork: pooled connections
    must not be shared across processes)."""
    if settings.backend != "s3":
        return Storage(make_store(settings))
    store = _s3_store(settings)
    readable = settings.readable_buckets
    return Storage(store, _reader(store, readable), _lister(store, readable))


def make_s3_reader(settings: StorageSettings) -> S3Reader | None:
    """A reader limited to ``s3_read_buckets``, on a client of its own; None without the s3 backend.

    The results bucket is not among them: it holds every tenant's data under tenant prefixes.
    """
    return open_storage(settings).read_s3 if settings.backend == "s3" else None


def make_s3_lister(settings: StorageSettings) -> S3Lister | None:
    """A lister limited to ``s3_read_buckets``, like :func:`make_s3_reader`; None without the s3 backend."""
    return open_storage(settings).list_s3 if settings.backend == "s3" else None


def _reader(store: S3Store, readable: frozenset[str]) -> S3Reader:
    def read(bucket: str, key: str, max_bytes: int) -> bytes:
        if bucket not in readable:  # answered like a missing object: no probing of other buckets
            raise ObjectNotFoundError(f"s3://{bucket}/{key}")
        return store.for_bucket(bucket).get(key, max_bytes)

    return read


def _lister(store: S3Store, readable: frozenset[str]) -> S3Lister:
    def list_keys(bucket: str, prefix: str) -> Iterator[tuple[str, int]]:
        if bucket not in readable:  # refused on the call, before any iteration, like a missing object
            raise ObjectNotFoundError(f"s3://{bucket}/{prefix}")
        return store.for_bucket(bucket).list_keys(prefix)

    return list_keys


def _s3_store(settings: StorageSettings) -> S3Store:
    """The results bucket's S3Store; boto3 is imported only when the s3 backend is used."""
    from storage.s3 import S3Store, make_presign_client, make_s3_client, make_transfer_config

    client = make_s3_client(settings)
    return S3Store(client, settings.s3_bucket, make_transfer_config(settings), make_presign_client(settings))
