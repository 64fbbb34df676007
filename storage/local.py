"""The filesystem backend (the embedded default) and the HMAC-signed URLs the API serves its files under."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO
from urllib.parse import quote

from storage.base import (
    BackendUnavailableError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PresignedUrl,
    StorageError,
)

SIGNING_KEY_FILE = ".signing-key"
_SIGNING_KEY_BYTES = 32


class LocalStore:
    """ObjectStore on a directory; presigned GETs point at the API's ``/v1/files/`` route."""

    def __init__(self, root: Path, public_url: str, signing_key: bytes) -> None:
        self._root = root
        self._public_url = public_url.rstrip("/")
        self._signing_key = signing_key

    def path_for(self, key: str) -> Path:
        """The file that holds ``key`` (which may not exist). Raises ValueError for an unsafe key."""
        return self._root.joinpath(*_segments(key))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write atomically: readers see the old bytes or the new, never a partial file. ``content_type`` is
        not stored (the API derives it when serving)."""
        self._write(key, lambda f: f.write(data))

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        """Copy ``path`` to ``key``, atomically like :meth:`put`."""

        def copy(f: BinaryIO) -> None:
            with path.open("rb") as source:
                shutil.copyfileobj(source, f, 1024 * 1024)

        self._write(key, copy)

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    fill(f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as e:
            raise StorageError(f"cannot write {key}: {e}") from e

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self.path_for(key)
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLargeError(f"{key} is {size} bytes, over the {max_bytes}-byte limit")
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
            raise ObjectNotFoundError(key) from e
        except OSError as e:
            raise StorageError(f"cannot read {key}: {e}") from e

    def size(self, key: str) -> int | None:
        try:
            stat = self.path_for(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return stat.st_size if S_ISREG(stat.st_mode) else None

    def delete_prefix(self, prefix: str) -> int:
        """Delete every file whose key starts with ``prefix``, then the directories that became empty."""
        _segments(prefix.removesuffix("/"))  # a key, or a key and "/"; the empty prefix (everything) is refused
        head = prefix.rpartition("/")[0]
        base = self._root.joinpath(*head.split("/")) if head else self._root
        if not base.is_dir():
            return 0
        deleted = 0
        for path in sorted([base, *base.rglob("*")], reverse=True):  # a directory's contents come first
            key = self._key_of(path)
            if path.is_dir():
                if f"{key}/".startswith(prefix):
                    with suppress(OSError):  # not empty: a concurrent write landed in it
                        path.rmdir()
            elif key.startswith(prefix) and not path.name.startswith("."):  # not another writer's temp file
                path.unlink(missing_ok=True)
                deleted += 1
        return deleted

    def presign_get(self, key: str, expires_in: int) -> PresignedUrl:
        _segments(key)
        expires = int(time.time()) + expires_in
        signature = sign(self._signing_key, key, expires)
        url = f"{self._public_url}/v1/files/{quote(key)}?expires={expires}&signature={signature}"
        return PresignedUrl(url=url, expires_at=datetime.fromtimestamp(expires, tz=UTC))

    def verify_presigned(self, key: str, expires: int, signature: str) -> bool:
        """True when ``signature`` is this store's, for ``key``, and ``expires`` has not passed."""
        return verify_signature(self._signing_key, key, expires, signature, time.time())

    def ping(self) -> None:
        if not (self._root.is_dir() and os.access(self._root, os.W_OK | os.X_OK)):
            raise BackendUnavailableError(f"{self._root} is not a writable directory")

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self._root).as_posix()


def sign(signing_key: bytes, key: str, expires: int) -> str:
    """Hex HMAC-SHA256 of ``key`` and its expiry (unix seconds)."""
    return hmac.new(signing_key, f"{key}\n{expires}".encode(), hashlib.sha256).hexdigest()


def verify_signature(signing_key: bytes, key: str, expires: int, signature: str, now: float) -> bool:
    """Whether ``signature`` is what ``LocalStore.presign_get`` issued for ``key`` and it is still valid."""
    if expires < now:
        return False
    return hmac.compare_digest(sign(signing_key, key, expires).encode(), signature.encode())


def load_or_create_signing_key(root: Path) -> bytes:
    """The random key in ``root/.signing-key`` (mode 0600), created once, so processes sharing ``root`` agree."""
    path = root / SIGNING_KEY_FILE
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f"{SIGNING_KEY_FILE}.")  # mkstemp creates it 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(_SIGNING_KEY_BYTES))
            os.link(tmp, path)  # atomic and exclusive: of two racing processes, one key wins
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    key = path.read_bytes()
    if len(key) != _SIGNING_KEY_BYTES:
        raise StorageError(f"{path} does not hold a {_SIGNING_KEY_BYTES}-byte key")
    return key


def _segments(key: str) -> list[str]:
    """The path segments of ``key``; raises ValueError unless it is a relative, normalised, forward-slash path
    whose segments are not hidden (dot files are this backend's own: temp files and the signing key)."""
    segments = key.split("/")
    if "\\" in key or "\0" in key or any(not s or s.startswith(".") for s in segments):
        raise ValueError(f"invalid storage key: {key!r}")
    return segments
