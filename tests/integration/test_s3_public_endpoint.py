"""Result URLs for clients that reach S3 at another address than samq does (``SAMQ_STORAGE_S3_PUBLIC_ENDPOINT_URL``):
one moto server, reached by samq at 127.0.0.1 and by the client at localhost."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from storage import StorageSettings, make_store
from storage.s3 import S3Store, make_s3_client
from tests.support.moto_server import moto_s3_server


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_s3_server() as url:
        yield url


def store_for(endpoint: str, public: str | None) -> S3Store:
    values: dict[str, Any] = {
        "backend": "s3",
        "s3_endpoint_url": endpoint,
        "s3_public_endpoint_url": public,
        "s3_bucket": f"samq-{uuid.uuid4().hex[:12]}",
        "s3_access_key_id": SecretStr("testing"),
        "s3_secret_access_key": SecretStr("testing"),
    }
    settings = StorageSettings(**values)
    make_s3_client(settings).create_bucket(Bucket=settings.s3_bucket)
    store = make_store(settings)
    assert isinstance(store, S3Store)
    return store


def test_presigned_url_names_the_public_endpoint_and_downloads(endpoint: str) -> None:
    port = urlsplit(endpoint).port
    assert urlsplit(endpoint).hostname == "127.0.0.1"
    public = f"http://localhost:{port}"
    store = store_for(endpoint, public)
    data = uuid.uuid4().bytes * 1000
    store.put("t1/jobs/j1/masks/0.png", data, "image/png")

    url = store.presign_get("t1/jobs/j1/masks/0.png", 300).url

    assert url.startswith(f"{public}/")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/png"
        assert response.read() == data


def test_without_a_public_endpoint_urls_name_the_endpoint(endpoint: str) -> None:
    store = store_for(endpoint, None)
    store.put("t1/jobs/j1/result.json", b"{}", "application/json")
    url = store.presign_get("t1/jobs/j1/result.json", 300).url
    assert url.startswith(f"{endpoint}/")
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"{}"
