"""Presigned S3 URLs for the endpoint clients reach (``SAMQ_STORAGE_S3_PUBLIC_ENDPOINT_URL``). Presigning is local
(no request is sent), so these run without any S3 server; tests/integration/test_s3_public_endpoint.py downloads one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from botocore.config import Config
from pydantic import SecretStr

from storage import StorageSettings, make_store
from storage.s3 import S3Store

INTERNAL = "http://minio:9000"
PUBLIC = "http://localhost:9000"
KEY = "t1/jobs/j1/masks/0.png"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """SigV4's timestamp is part of the URL: one instant for every signature in a test, so URLs compare equal."""
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: NOW)


def s3_store(**overrides: Any) -> S3Store:
    values: dict[str, Any] = {
        "backend": "s3",
        "s3_endpoint_url": INTERNAL,
        "s3_bucket": "samq",
        "s3_access_key_id": SecretStr("samq"),
        "s3_secret_access_key": SecretStr("a-long-secret"),
    }
    store = make_store(StorageSettings(**(values | overrides)))
    assert isinstance(store, S3Store)
    return store


def signed_elsewhere(endpoint: str) -> str:
    """The URL a plain boto3 client for ``endpoint`` signs: what the server at that address will verify."""
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="samq",
        aws_secret_access_key="a-long-secret",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    url: str = client.generate_presigned_url("get_object", Params={"Bucket": "samq", "Key": KEY}, ExpiresIn=600)
    return url


def test_urls_are_signed_for_the_public_endpoint() -> None:
    url = s3_store(s3_public_endpoint_url=PUBLIC).presign_get(KEY, 600).url

    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "localhost:9000", f"/samq/{KEY}")
    query = parse_qs(parts.query)
    assert query["X-Amz-SignedHeaders"] == ["host"]
    assert url == signed_elsewhere(PUBLIC)


def test_a_rewritten_host_would_not_be_the_same_signature() -> None:
    """Why a second client: the signature covers the host, so the internal URL with its host swapped is not a URL
    the public endpoint accepts."""
    public = s3_store(s3_public_endpoint_url=PUBLIC).presign_get(KEY, 600).url
    internal = s3_store().presign_get(KEY, 600).url
    rewritten = internal.replace(INTERNAL, PUBLIC, 1)

    assert urlsplit(rewritten).netloc == urlsplit(public).netloc
    assert parse_qs(urlsplit(rewritten).query)["X-Amz-Signature"] != parse_qs(urlsplit(public).query)["X-Amz-Signature"]


@pytest.mark.parametrize("public", [None, INTERNAL], ids=["unset", "same-as-endpoint"])
def test_without_a_distinct_public_endpoint_urls_name_the_endpoint(public: str | None) -> None:
    store = s3_store(s3_public_endpoint_url=public)
    url = store.presign_get(KEY, 600).url
    assert urlsplit(url).netloc == "minio:9000"
    assert url == signed_elsewhere(INTERNAL)
    assert store._presign_client is store._client


def test_other_buckets_keep_the_public_endpoint() -> None:
    url = s3_store(s3_public_endpoint_url=PUBLIC).for_bucket("media").presign_get("clip.mp4", 60).url
    assert url.startswith(f"{PUBLIC}/media/clip.mp4?")


def test_the_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMQ_STORAGE_S3_PUBLIC_ENDPOINT_URL", "https://s3.example.org")
    assert StorageSettings().s3_public_endpoint_url == "https://s3.example.org"
