"""The S3 backend (AWS, MinIO, anything S3-compatible) over boto3."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.handlers import add_expect_header
from botocore.utils import determine_content_length

from storage.base import (
    BackendUnavailableError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    PresignedUrl,
    StorageError,
)
from storage.settings import StorageSettings

_DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_TRANSIENT_CODES = frozenset({"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException"})
_TRANSIENT_ERRORS = (BotoConnectionError, HTTPClientError, IncompleteReadError)


class S3Store:
    """ObjectStore over one bucket; ``for_bucket`` gives a view of another bucket on the same client.

    One client serves every call of a process (boto3 clients are thread-safe): its pool keeps connections alive
    between requests. Objects under the multipart threshold go up in one PutObject, without s3transfer's thread pool.

    ``presign_client`` signs the URLs of ``presign_get`` (default: ``client``): one configured for the endpoint as
    clients reach it (:func:`make_presign_client`). Signing is local, so that client never connects anywhere.
    """

    def __init__(
        self, client: Any, bucket: str, transfer_config: TransferConfig, presign_client: Any | None = None
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._transfer_config = transfer_config
        self._presign_client = client if presign_client is None else presign_client

    def for_bucket(self, bucket: str) -> S3Store:
        """The same clients and transfer settings over ``bucket`` (e.g. to read ``s3://bucket/key`` media)."""
        return S3Store(self._client, bucket, self._transfer_config, self._presign_client)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Upload ``data``: one PutObject, or from the transfer config's threshold up a multipart upload."""
        with _translated(self._bucket, key):
            if len(data) < self._transfer_config.multipart_threshold:
                self._client.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType=content_type)
                return
            self._client.upload_fileobj(
                io.BytesIO(data),
                self._bucket,
                key,
                ExtraArgs={"ContentType": content_type},
                Config=self._transfer_config,
            )

    def put_file(self, key: str, path: Path, content_type: str = "application/octet-stream") -> None:
        """Upload a local file, streamed: one PutObject, or from the transfer config's threshold up a multipart
        upload."""
        with _translated(self._bucket, key):
            if path.stat().st_size < self._transfer_config.multipart_threshold:
                with path.open("rb") as body:
                    self._client.put_object(Bucket=self._bucket, Key=key, Body=body, ContentType=content_type)
                return
            self._client.upload_file(
                str(path), self._bucket, key, ExtraArgs={"ContentType": content_type}, Config=self._transfer_config
            )

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """Read ``key``; with ``max_bytes``, the response's Content-Length is checked before the body is read."""
        with _translated(self._bucket, key):
            response = self._client.get_object(Bucket=self._bucket, Key=key)
            body = response["Body"]
            with body:
                size = int(response["ContentLength"])
                if max_bytes is not None and size > max_bytes:
                    raise ObjectTooLargeError(f"{key} is {size} bytes, over the {max_bytes}-byte limit")
                data: bytes = body.read()
        return data

    def size(self, key: str) -> int | None:
        try:
            with _translated(self._bucket, key):
                response = self._client.head_object(Bucket=self._bucket, Key=key)
        except ObjectNotFoundError:
            return None
        return int(response["ContentLength"])

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, a page of at most 1000 keys per DeleteObjects call."""
        if not prefix:
            raise ValueError("refusing to delete the whole bucket (empty prefix)")
        deleted = 0
        with _translated(self._bucket, prefix):
            paginator = self._client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self._bucket, Prefix=prefix, PaginationConfig={"PageSize": _DELETE_BATCH})
            for page in pages:
                objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not objects:
                    continue
                response = self._client.delete_objects(Bucket=self._bucket, Delete={"Objects": objects, "Quiet": True})
                if errors := response.get("Errors"):
                    raise StorageError(f"could not delete {len(errors)} keys under {prefix}: {errors[0]}")
                deleted += len(objects)
        return deleted

    def list_keys(self, prefix: str, page_size: int = 1000) -> Iterator[tuple[str, int]]:
        """``(key, size)`` of every object under ``prefix`` in key order, one ListObjectsV2 page of ``page_size``
        keys at a time; directory markers (keys ending in "/") are skipped. A missing bucket is a StorageError, not
        an ObjectNotFoundError: a misconfiguration rather than a prefix with nothing under it."""
        with _translated(self._bucket, prefix):
            paginator = self._client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self._bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size})
            for page in pages:
                for item in page.get("Contents", []):
                    key: str = item["Key"]
                    if not key.endswith("/"):
                        yield key, int(item["Size"])

    def presign_get(self, key: str, expires_in: int) -> PresignedUrl:
        expires_at = datetime.now(tz=UTC) + timedelta(seconds=expires_in)
        with _translated(self._bucket, key):
            url: str = self._presign_client.generate_presigned_url(
                "get_object", Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires_in
            )
        return PresignedUrl(url=url, expires_at=expires_at)

    def ping(self) -> None:
        try:
            self._client.head_bucket(Bucket=self._bucket)
        except (ClientError, BotoCoreError) as e:
            raise BackendUnavailableError(f"bucket {self._bucket} is not reachable: {e}") from e


def make_s3_client(settings: StorageSettings) -> Any:
    """A boto3 S3 client for ``settings``; unset credentials fall back to boto3's default chain. PUT bodies under
    ``expect_continue_bytes`` go without ``Expect: 100-continue`` (botocore asks it for every streamed body)."""
    client = _client(settings, settings.s3_endpoint_url)
    events = client.meta.events  # the client's own copy: other clients keep botocore's handler
    events.unregister("before-call.s3", add_expect_header)
    events.register("before-call.s3", expect_continue_from(settings.expect_continue_bytes))
    return client


def expect_continue_from(min_bytes: int) -> Callable[..., None]:
    """A ``before-call`` handler in place of botocore's ``add_expect_header``: ``Expect: 100-continue`` on a PUT or
    POST whose body is ``min_bytes`` or more (or of unknown length), none on a smaller one.

    The header makes the client send the headers, wait a round trip for the server's go-ahead, then the body: on a
    large body (a multipart part) a refusal (expired credentials, a redirect, SlowDown) then costs that round trip,
    not the body's transfer, which dwarfs it anyway. On a result document of a few KB the wait is the whole cost.
    """

    def add(model: Any, params: dict[str, Any], **kwargs: Any) -> None:
        if model.http.get("method") not in ("PUT", "POST") or "body" not in params:
            return
        size = determine_content_length(params["body"])
        if size is None or size >= min_bytes:
            params["headers"]["Expect"] = "100-continue"

    return add


def make_presign_client(settings: StorageSettings) -> Any | None:
    """A client for ``s3_public_endpoint_url`` that only signs URLs (SigV4 signs the Host header, so rewriting a
    URL's host afterwards would void its signature); None when that setting is unset or names the same endpoint."""
    public = settings.s3_public_endpoint_url
    if public is None or public == settings.s3_endpoint_url:
        return None
    return _client(settings, public)


def _client(settings: StorageSettings, endpoint_url: str | None) -> Any:
    config = Config(
        s3={"addressing_style": "path"},
        max_pool_connections=settings.max_connections,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        retries={"max_attempts": settings.max_retries, "mode": "standard"},
        signature_version="s3v4",
    )
    access_key = settings.s3_access_key_id
    secret_key = settings.s3_secret_access_key
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=access_key.get_secret_value() if access_key else None,
        aws_secret_access_key=secret_key.get_secret_value() if secret_key else None,
        config=config,
    )


def make_transfer_config(settings: StorageSettings) -> TransferConfig:
    return TransferConfig(multipart_threshold=settings.multipart_threshold_bytes)


@contextmanager
def _translated(bucket: str, key: str) -> Iterator[None]:
    """Turn botocore's errors into storage errors: missing key, transient (retry), or anything else."""
    try:
        yield
    except ClientError as e:
        error = e.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        where = f"s3://{bucket}/{key}"
        if code in _NOT_FOUND_CODES:
            raise ObjectNotFoundError(where) from e
        if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
            raise BackendUnavailableError(f"{where}: {e}") from e
        raise StorageError(f"{where}: {e}") from e
    except _TRANSIENT_ERRORS as e:
        raise BackendUnavailableError(f"s3://{bucket}/{key}: {e}") from e
    except BotoCoreError as e:
        raise StorageError(f"s3://{bucket}/{key}: {e}") from e
