"""The HTTP requests S3Store's client sends, as botocore builds them (headers signed and final), taken at
``before-send`` and answered there, so no server is needed: a small object is one PutObject that does not wait for
``100-continue``, a large body still asks for it, and a process's store, reader and lister share one client."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSRequest, AWSResponse
from pydantic import SecretStr

from storage import StorageSettings, open_storage
from storage.s3 import S3Store, expect_continue_from, make_s3_client

KiB = 1024
EMPTY_LISTING = b"<ListBucketResult><IsTruncated>false</IsTruncated><KeyCount>0</KeyCount></ListBucketResult>"


class Raw:
    """What urllib3 would hand botocore: a response body to stream or read."""

    def __init__(self, body: bytes) -> None:
        self._body = io.BytesIO(body)

    def stream(self, amt: int = 1024, decode_content: bool = False) -> Any:
        while chunk := self._body.read(amt):
            yield chunk

    def read(self, amt: int | None = None, decode_content: bool = False) -> bytes:
        return self._body.read(amt)

    def close(self) -> None:
        pass


class Sent:
    """Every request a client sends, each answered 200 instead of going out: a GET with ``body`` (a listing with
    no keys)."""

    def __init__(self, client: Any, body: bytes = b"") -> None:
        self.requests: list[AWSRequest] = []
        self._body = body
        client.meta.events.register("before-send.s3", self._answer)

    def _answer(self, request: AWSRequest, **kwargs: Any) -> AWSResponse:
        self.requests.append(request)
        listing = "list-type=2" in request.url
        body = b"" if request.method != "GET" else EMPTY_LISTING if listing else self._body
        headers = {"Content-Length": str(len(body)), "ETag": '"e"'}
        return AWSResponse(request.url, 200, headers, Raw(body))

    def expects(self) -> list[str | None]:
        """Each request's ``Expect`` header."""
        return [_text(r.headers.get("Expect")) for r in self.requests]


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def settings(**overrides: Any) -> StorageSettings:
    values: dict[str, Any] = {
        "backend": "s3",
        "s3_endpoint_url": "http://127.0.0.1:9",  # nothing listens: a request that got out would fail
        "s3_bucket": "results",
        "s3_access_key_id": SecretStr("k"),
        "s3_secret_access_key": SecretStr("s"),
        "s3_read_buckets": ["media"],
        "expect_continue_bytes": 64 * KiB,
    }
    return StorageSettings(**(values | overrides))


def s3_store(**overrides: Any) -> tuple[S3Store, Sent]:
    storage = open_storage(settings(**overrides))
    assert isinstance(storage.objects, S3Store)
    return storage.objects, Sent(storage.objects._client, b"media bytes")


def test_a_small_object_is_one_put_that_does_not_wait_for_100_continue() -> None:
    store, sent = s3_store()
    store.put("t/jobs/j/result.json", b'{"instances":[]}', "application/json")
    [put] = sent.requests
    assert (put.method, put.url) == ("PUT", "http://127.0.0.1:9/results/t/jobs/j/result.json")
    assert _text(put.headers["Content-Type"]) == "application/json"
    assert sent.expects() == [None]


def test_a_body_from_the_threshold_up_asks_for_100_continue_first() -> None:
    store, sent = s3_store()
    store.put("t/uploads/a", b"x" * (64 * KiB - 1))
    store.put("t/uploads/b", b"x" * 64 * KiB)
    assert sent.expects() == [None, "100-continue"]


def test_a_small_file_is_one_streamed_put_without_100_continue(tmp_path: Path) -> None:
    path = tmp_path / "tracks.jsonl"
    path.write_bytes(b'{"frame":0}\n' * 100)
    store, sent = s3_store()
    store.put_file("t/jobs/j/tracks.jsonl", path, "application/jsonl")
    [put] = sent.requests
    assert put.method == "PUT" and _text(put.headers["Content-Length"]) == str(path.stat().st_size)
    assert sent.expects() == [None]


@pytest.mark.parametrize(("size", "expect"), [(KiB, None), (64 * KiB, "100-continue")])
def test_multipart_parts_follow_the_same_threshold(size: int, expect: str | None) -> None:
    client = make_s3_client(settings())
    sent = Sent(client)
    client.upload_part(Bucket="results", Key="k", UploadId="u", PartNumber=1, Body=b"x" * size)
    assert sent.expects() == [expect]


def test_a_body_of_unknown_length_asks_for_100_continue() -> None:
    class Stream(io.RawIOBase):
        """Readable, not seekable: its length is unknown until read."""

        def readable(self) -> bool:
            return True

    put = make_s3_client(settings()).meta.service_model.operation_model("PutObject")
    params: dict[str, Any] = {"body": Stream(), "headers": {}}
    expect_continue_from(64 * KiB)(model=put, params=params)
    assert params["headers"] == {"Expect": "100-continue"}


def test_reads_send_no_expect_and_other_clients_keep_botocores_default() -> None:
    store, sent = s3_store()
    assert store.get("t/uploads/a") == b"media bytes"
    assert sent.expects() == [None]
    plain = boto3.session.Session().client(
        "s3",
        endpoint_url="http://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
    )
    plain_sent = Sent(plain)
    plain.put_object(Bucket="results", Key="k", Body=b"{}")
    assert plain_sent.expects() == ["100-continue"]  # botocore's own handler, untouched outside our clients


def test_the_store_reader_and_lister_of_a_process_share_one_client() -> None:
    storage = open_storage(settings())
    assert isinstance(storage.objects, S3Store) and storage.read_s3 is not None and storage.list_s3 is not None
    sent = Sent(storage.objects._client, b"media bytes")  # answers only what goes through the store's own client
    assert storage.read_s3("media", "cats/1.jpg", 1024) == b"media bytes"
    assert list(storage.list_s3("media", "cats/")) == []
    assert [(r.method, r.url.split("?")[0]) for r in sent.requests] == [
        ("GET", "http://127.0.0.1:9/media/cats/1.jpg"),
        ("GET", "http://127.0.0.1:9/media"),
    ]
