"""Fetching job media (uploads, configured S3 buckets, http URLs) as bytes, with size and time limits."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.client import HTTPMessage
from typing import IO

from storage import S3Reader, keys
from storage.base import ObjectNotFoundError, ObjectStore, StorageError
from storage.base import StorageUnavailableError as BackendUnavailableError
from tasks.errors import (
    MediaFetchError,
    MediaNotFoundError,
    MediaTooLargeError,
    PermanentError,
    StorageUnavailableError,
)
from tasks.specs import Base64Image, S3Image, UploadImage, UrlImage

MAX_REDIRECTS = 3


class UrlRefusedError(PermanentError):
    """The URL resolves to an address samq must not fetch from (loopback, private, link-local, …)."""

    code = "url_refused"


class MediaSource:
    """Turns a media reference into bytes, never more than ``max_bytes``."""

    def __init__(
        self,
        objects: ObjectStore,
        s3_reader: S3Reader | None,
        *,
        max_bytes: int,
        timeout: float,
        allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
    ) -> None:
        self._objects = objects
        self._s3_reader = s3_reader
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._allowed = allowed_networks

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
            return self._from_store(lambda: reader(bucket, key, self._max_bytes), ref)
        return self._from_url(ref.url)

    def _from_store(self, read: Callable[[], bytes], ref: UploadImage | S3Image) -> bytes:
        try:
            return read()
        except ObjectNotFoundError as e:
            raise MediaNotFoundError(f"{ref.model_dump_json()} does not exist") from e
        except BackendUnavailableError as e:
            raise StorageUnavailableError(f"object storage unavailable: {e}") from e
        except StorageError as e:
            raise MediaTooLargeError(
                f"media is larger than {self._max_bytes} bytes (SAMQ_WORKER_MAX_MEDIA_BYTES)"
            ) from e

    def _from_url(self, url: str) -> bytes:
        self._check_host(url)
        request = urllib.request.Request(url, headers={"User-Agent": "samq"})
        opener = urllib.request.build_opener(_GuardedRedirects(self._check_host))
        try:
            with opener.open(request, timeout=self._timeout) as response:
                data: bytes = response.read(self._max_bytes + 1)
        except urllib.error.HTTPError as e:
            if e.code in (404, 410):
                raise MediaNotFoundError(f"{url} answered {e.code}") from e
            if e.code >= 500 or e.code == 429:
                raise MediaFetchError(f"{url} answered {e.code}") from e
            raise UrlRefusedError(f"{url} answered {e.code}") from e
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise MediaFetchError(f"could not fetch {url}: {e}") from e
        if len(data) > self._max_bytes:
            raise MediaTooLargeError(f"{url} is larger than {self._max_bytes} bytes (SAMQ_WORKER_MAX_MEDIA_BYTES)")
        return data

    def _check_host(self, url: str) -> None:
        host = urllib.parse.urlsplit(url).hostname or ""
        try:
            infos = socket.getaddrinfo(host, None)
        except socket.gaierror as e:
            raise MediaNotFoundError(f"cannot resolve {host!r}") from e
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if not address.is_global and not any(address in net for net in self._allowed):
                raise UrlRefusedError(f"{host} resolves to {address}, which is not a public address")


class _GuardedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows at most ``MAX_REDIRECTS`` hops, each re-checked by the address guard."""

    max_redirections = MAX_REDIRECTS

    def __init__(self, check_host: Callable[[str], None]) -> None:
        self._check_host = check_host

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage, newurl: str
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise UrlRefusedError(f"redirect to {newurl} is not http(s)")
        self._check_host(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _decode_base64(text: str, max_bytes: int) -> bytes:
    if len(text) * 3 // 4 > max_bytes:
        raise MediaTooLargeError(f"base64 image is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise InvalidBase64Error(f"image.base64 is not valid base64: {e}") from e


class InvalidBase64Error(PermanentError):
    """``image.base64`` does not decode."""

    code = "invalid_base64"
