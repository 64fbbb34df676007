from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from storage import (
    BackendUnavailableError,
    ObjectNotFoundError,
    ObjectStore,
    ObjectTooLargeError,
    StorageSettings,
    make_store,
)
from storage.local import LocalStore, load_or_create_signing_key, verify_signature

KEY = b"k" * 32


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "objects", "http://api.test/", KEY)


def test_put_get_round_trip(store: LocalStore) -> None:
    store.put("t1/jobs/j1/masks.json", b'{"a": 1}', "application/json")
    assert store.get("t1/jobs/j1/masks.json") == b'{"a": 1}'
    assert store.size("t1/jobs/j1/masks.json") == 8


def test_overwrite_replaces_bytes(store: LocalStore) -> None:
    store.put("t1/uploads/u1", b"first version")
    store.put("t1/uploads/u1", b"second")
    assert store.get("t1/uploads/u1") == b"second"


def test_put_leaves_no_temp_files(store: LocalStore) -> None:
    for i in range(3):
        store.put("t1/jobs/j1/out.bin", bytes([i]) * 100)
    assert os.listdir(store.path_for("t1/jobs/j1")) == ["out.bin"]


@pytest.mark.parametrize(
    "key",
    ["", "/abs/key", "t1/../secret", "t1//x", "t1/x/", "t1\\x", "./x", "t1/.signing-key", ".signing-key"],
)
def test_unsafe_keys_are_refused(store: LocalStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        store.put(key, b"x")
    with pytest.raises(ValueError, match="invalid storage key"):
        store.get(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        store.presign_get(key, 60)


def test_max_bytes(store: LocalStore) -> None:
    store.put("t1/uploads/u1", b"0123456789")
    assert store.get("t1/uploads/u1", max_bytes=10) == b"0123456789"
    with pytest.raises(ObjectTooLargeError, match="over the 9-byte limit"):
        store.get("t1/uploads/u1", max_bytes=9)


def test_missing_key(store: LocalStore) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.get("t1/uploads/nope")
    assert store.size("t1/uploads/nope") is None


def test_a_directory_is_not_an_object(store: LocalStore) -> None:
    store.put("t1/jobs/j1/out.bin", b"x")
    with pytest.raises(ObjectNotFoundError):
        store.get("t1/jobs/j1")
    with pytest.raises(ObjectNotFoundError):
        store.get("t1/jobs/j1/out.bin/deeper")
    assert store.size("t1/jobs/j1") is None


def test_delete_prefix_deletes_only_under_prefix(store: LocalStore) -> None:
    for key in ["t1/jobs/j1/a", "t1/jobs/j1/sub/b", "t1/jobs/j10/c", "t2/jobs/j1/a"]:
        store.put(key, b"x")
    assert store.delete_prefix("t1/jobs/j1/") == 2
    assert store.size("t1/jobs/j1/a") is None
    assert not store.path_for("t1/jobs/j1").exists()
    assert store.get("t1/jobs/j10/c") == b"x"
    assert store.get("t2/jobs/j1/a") == b"x"
    assert store.delete_prefix("t1/jobs/j1/") == 0


def test_delete_prefix_is_a_string_prefix(store: LocalStore) -> None:
    for key in ["t1/jobs/j1/a", "t1/jobs/j10/c", "t1/jobs/k/d"]:
        store.put(key, b"x")
    assert store.delete_prefix("t1/jobs/j1") == 2
    assert store.get("t1/jobs/k/d") == b"x"


def test_delete_prefix_refuses_everything(store: LocalStore) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        store.delete_prefix("")


def test_presigned_url_verifies(store: LocalStore) -> None:
    presigned = store.presign_get("t1/jobs/j1/masks.json", 600)
    url = urlsplit(presigned.url)
    assert f"{url.scheme}://{url.netloc}" == "http://api.test"
    assert url.path == "/v1/files/t1/jobs/j1/masks.json"
    query = parse_qs(url.query)
    expires, signature = int(query["expires"][0]), query["signature"][0]
    assert expires == int(presigned.expires_at.timestamp())
    assert abs(expires - (time.time() + 600)) < 5
    key = unquote(url.path.removeprefix("/v1/files/"))
    assert verify_signature(KEY, key, expires, signature, now=time.time())
    assert not verify_signature(KEY, "t1/jobs/j2/masks.json", expires, signature, now=time.time())
    assert not verify_signature(KEY, key, expires + 1, signature, now=time.time())
    assert not verify_signature(KEY, key, expires, "0" * 64, now=time.time())
    assert not verify_signature(KEY, key, expires, "not hex é", now=time.time())
    assert not verify_signature(b"x" * 32, key, expires, signature, now=time.time())
    assert not verify_signature(KEY, key, expires, signature, now=expires + 1)


def test_presigned_url_quotes_the_key(store: LocalStore) -> None:
    url = store.presign_get("t1/uploads/a b?c", 60).url
    assert "/v1/files/t1/uploads/a%20b%3Fc?expires=" in url


def test_signing_key_is_created_once_and_private(tmp_path: Path) -> None:
    root = tmp_path / "data"
    first = load_or_create_signing_key(root)
    assert len(first) == 32
    assert load_or_create_signing_key(root) == first
    assert stat.S_IMODE((root / ".signing-key").stat().st_mode) == 0o600
    assert os.listdir(root) == [".signing-key"]


def test_ping(store: LocalStore) -> None:
    with pytest.raises(BackendUnavailableError):
        store.ping()  # the root does not exist yet
    store.put("t1/uploads/u1", b"x")
    store.ping()


def test_make_store_local(tmp_path: Path) -> None:
    root = tmp_path / "objects"
    store: ObjectStore = make_store(StorageSettings(backend="local", dir=root))
    store.ping()
    store.put("t1/uploads/u1", b"x")
    assert (root / "t1" / "uploads" / "u1").read_bytes() == b"x"
    assert isinstance(store, LocalStore)
