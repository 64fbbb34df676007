from __future__ import annotations

import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import SecretStr

from samq.embedded import free_port
from storage import (
    BackendUnavailableError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageError,
    StorageSettings,
    make_s3_lister,
    make_store,
)
from storage.s3 import S3Store, _translated, make_s3_client, make_transfer_config
from tests.support.moto_server import moto_s3_server

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


def s3_settings(endpoint: str, **overrides: Any) -> StorageSettings:
    values: dict[str, Any] = {
        "backend": "s3",
        "s3_endpoint_url": endpoint,
        "s3_bucket": f"samq-{uuid.uuid4().hex[:12]}",
        "s3_access_key_id": SecretStr("testing"),
        "s3_secret_access_key": SecretStr("testing"),
        "multipart_threshold_bytes": 5 * MiB,
    }
    return StorageSettings(**(values | overrides))


@pytest.fixture
def settings(endpoint: str) -> StorageSettings:
    settings = s3_settings(endpoint)
    make_s3_client(settings).create_bucket(Bucket=settings.s3_bucket)
    return settings


@pytest.fixture
def client(settings: StorageSettings) -> Any:
    return make_s3_client(settings)


@pytest.fixture
def store(settings: StorageSettings) -> S3Store:
    store = make_store(settings)
    assert isinstance(store, S3Store)
    return store


def test_round_trip(store: S3Store, client: Any, settings: StorageSettings) -> None:
    store.ping()
    store.put("t1/jobs/j1/masks.json", b'{"a": 1}', "application/json")
    assert store.get("t1/jobs/j1/masks.json") == b'{"a": 1}'
    assert store.size("t1/jobs/j1/masks.json") == 8
    head = client.head_object(Bucket=settings.s3_bucket, Key="t1/jobs/j1/masks.json")
    assert head["ContentType"] == "application/json"
    store.put("t1/jobs/j1/masks.json", b"{}")
    assert store.get("t1/jobs/j1/masks.json") == b"{}"


def test_large_object_goes_multipart(store: S3Store, client: Any, settings: StorageSettings) -> None:
    data = os.urandom(20 * MiB)
    store.put("t1/uploads/big", data)
    etag = client.head_object(Bucket=settings.s3_bucket, Key="t1/uploads/big")["ETag"]
    assert "-" in etag  # a multipart ETag is "<md5 of part md5s>-<part count>"
    assert store.get("t1/uploads/big") == data
    assert store.get("t1/uploads/big", max_bytes=20 * MiB) == data
    with pytest.raises(ObjectTooLargeError, match="over the"):
        store.get("t1/uploads/big", max_bytes=20 * MiB - 1)


def test_small_object_is_a_single_put(store: S3Store, client: Any, settings: StorageSettings) -> None:
    store.put("t1/uploads/small", b"x" * MiB)
    assert "-" not in client.head_object(Bucket=settings.s3_bucket, Key="t1/uploads/small")["ETag"]


def test_presigned_get(store: S3Store) -> None:
    store.put("t1/jobs/j1/result.png", b"\x89PNG bytes")
    presigned = store.presign_get("t1/jobs/j1/result.png", 300)
    with urllib.request.urlopen(presigned.url, timeout=10) as response:
        assert response.read() == b"\x89PNG bytes"
    assert 290 < presigned.expires_at.timestamp() - time.time() <= 300


def test_delete_prefix(store: S3Store) -> None:
    for key in ["t1/jobs/j1/a", "t1/jobs/j1/sub/b", "t1/jobs/j10/c", "t2/jobs/j1/a"]:
        store.put(key, b"x")
    assert store.delete_prefix("t1/jobs/j1/") == 2
    assert store.size("t1/jobs/j1/a") is None
    assert store.size("t1/jobs/j1/sub/b") is None
    assert store.get("t1/jobs/j10/c") == b"x"
    assert store.get("t2/jobs/j1/a") == b"x"
    assert store.delete_prefix("t1/jobs/j1/") == 0
    with pytest.raises(ValueError, match="empty prefix"):
        store.delete_prefix("")


def test_delete_prefix_spans_several_batches(store: S3Store, client: Any, settings: StorageSettings) -> None:
    for i in range(1005):
        client.put_object(Bucket=settings.s3_bucket, Key=f"t1/jobs/j1/frame-{i:05d}", Body=b"x")
    assert store.delete_prefix("t1/jobs/j1/") == 1005
    assert client.list_objects_v2(Bucket=settings.s3_bucket).get("KeyCount") == 0


def test_missing_key(store: S3Store) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.get("t1/uploads/nope")
    assert store.size("t1/uploads/nope") is None


def test_for_bucket_reads_another_bucket(store: S3Store, client: Any) -> None:
    other = f"media-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=other)
    client.put_object(Bucket=other, Key="videos/clip.mp4", Body=b"frames")
    assert store.for_bucket(other).get("videos/clip.mp4") == b"frames"


def test_missing_bucket_is_not_a_missing_key(store: S3Store) -> None:
    missing = store.for_bucket(f"missing-{uuid.uuid4().hex[:12]}")
    with pytest.raises(StorageError) as raised:
        missing.get("t1/uploads/u1")
    assert not isinstance(raised.value, ObjectNotFoundError)
    with pytest.raises(BackendUnavailableError):
        missing.ping()


@pytest.mark.parametrize(
    "operation",
    [
        lambda store: store.ping(),
        lambda store: store.get("t1/uploads/u1"),
        lambda store: store.size("t1/uploads/u1"),
        lambda store: store.put("t1/uploads/u1", b"x"),
        lambda store: store.delete_prefix("t1/"),
        lambda store: list(store.list_keys("t1/")),
    ],
    ids=["ping", "get", "size", "put", "delete_prefix", "list_keys"],
)
def test_unreachable_endpoint_is_unavailable(operation: Any) -> None:
    settings = s3_settings(f"http://127.0.0.1:{free_port()}", connect_timeout=1.0, read_timeout=1.0, max_retries=0)
    store = make_store(settings)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError) as raised:
        operation(store)
    assert time.monotonic() - started < 5
    assert raised.value.__cause__ is not None


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, ObjectNotFoundError),
        ("InternalError", 500, BackendUnavailableError),
        ("ServiceUnavailable", 503, BackendUnavailableError),
        ("SlowDown", 503, BackendUnavailableError),
        ("AccessDenied", 403, StorageError),
    ],
)
def test_server_errors_map_to_storage_errors(code: str, status: int, expected: type[StorageError]) -> None:
    """Errors moto cannot be made to send, raised as botocore would raise them, through the same translation."""
    error = ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")
    with pytest.raises(StorageError) as raised, _translated("bucket", "key"):
        raise error
    assert type(raised.value) is expected
    assert raised.value.__cause__ is error


def _put_many(client: Any, bucket: str, objects: dict[str, bytes]) -> None:
    with ThreadPoolExecutor(8) as pool:  # in parallel: one by one, a few hundred puts to moto take seconds
        list(pool.map(lambda item: client.put_object(Bucket=bucket, Key=item[0], Body=item[1]), objects.items()))


def test_list_keys_pages_through_every_key_once_in_order(client: Any, settings: StorageSettings) -> None:
    listed_pages: list[int] = []
    client.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda parsed, **_: listed_pages.append(parsed["KeyCount"])
    )
    store = S3Store(client, settings.s3_bucket, make_transfer_config(settings))
    objects = {f"in/frame-{i:04d}.jpg": b"x" * (i % 7) for i in reversed(range(250))}
    objects |= {"in/": b"", "in/sub/": b"", "in/sub/z.png": b"zz", "im/a.jpg": b"a", "inbox/b.jpg": b"b"}
    _put_many(client, settings.s3_bucket, objects)

    listed = list(store.list_keys("in/", page_size=100))

    expected = sorted((key, len(data)) for key, data in objects.items() if key.startswith("in/") and key[-1] != "/")
    assert listed == expected
    assert len(listed) == 251 and listed[-1] == ("in/sub/z.png", 2)
    assert listed_pages == [100, 100, 53]  # the markers are listed by S3 and skipped here


def test_list_keys_prefix_is_a_plain_string_prefix(store: S3Store, client: Any, settings: StorageSettings) -> None:
    keys = ["cats/a.jpg", "cats/b/c.jpg", "cats-old/d.jpg", "dogs/e.jpg", "cats.txt"]
    _put_many(client, settings.s3_bucket, {key: key.encode() for key in keys})
    assert [key for key, _ in store.list_keys("cats/")] == ["cats/a.jpg", "cats/b/c.jpg"]
    assert [key for key, _ in store.list_keys("cats")] == ["cats-old/d.jpg", "cats.txt", "cats/a.jpg", "cats/b/c.jpg"]
    assert [key for key, _ in store.list_keys("")] == sorted(keys)
    assert list(store.list_keys("birds/")) == []


def test_list_keys_skips_directory_markers(store: S3Store, client: Any, settings: StorageSettings) -> None:
    _put_many(client, settings.s3_bucket, {"in/": b"", "in/a/": b"", "in/a/b/": b"", "in/a/b/x.jpg": b"xyz"})
    assert list(store.list_keys("in/")) == [("in/a/b/x.jpg", 3)]
    assert list(store.list_keys("in/a/b/")) == [("in/a/b/x.jpg", 3)]


def test_list_keys_of_an_empty_bucket_or_prefix(store: S3Store) -> None:
    assert list(store.list_keys("")) == []
    assert list(store.list_keys("in/")) == []


def test_list_keys_of_a_missing_bucket_is_not_an_empty_listing(store: S3Store) -> None:
    listing = store.for_bucket(f"missing-{uuid.uuid4().hex[:12]}").list_keys("in/")
    with pytest.raises(StorageError) as raised:
        list(listing)
    assert not isinstance(raised.value, ObjectNotFoundError)


def test_lister_reads_only_the_read_buckets(endpoint: str, client: Any, settings: StorageSettings) -> None:
    media = f"media-{uuid.uuid4().hex[:12]}"
    unlisted = f"other-{uuid.uuid4().hex[:12]}"
    for bucket in (media, unlisted):
        client.create_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key="in/a.jpg", Body=b"abc")
    client.put_object(Bucket=settings.s3_bucket, Key="t1/jobs/j1/result.json", Body=b"{}")
    lister = make_s3_lister(
        s3_settings(endpoint, s3_bucket=settings.s3_bucket, s3_read_buckets=[media, settings.s3_bucket])
    )
    assert lister is not None

    assert list(lister(media, "in/")) == [("in/a.jpg", 3)]
    assert list(lister(media, "out/")) == []
    for refused in (unlisted, settings.s3_bucket):  # the results bucket is never readable, even when named
        with pytest.raises(ObjectNotFoundError):
            lister(refused, "")  # on the call itself, before any iteration
    assert make_s3_lister(StorageSettings(backend="local")) is None
