"""The Python client against a scripted transport (httpx.MockTransport): bodies it sends, retries, errors, media."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from samq import ApiError, Client, JobFailed, SamqError, WaitTimeout
from samq.progress import JobProgress

Handler = Callable[[httpx.Request], httpx.Response]


def job_object(job_id: str = "job_1", status: str = "queued", **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "type": "segment",
        "status": status,
        "progress": {"done": 0, "total": 1, "unit": "images"},
        "result": None,
        "error": None,
    } | fields


class Server:
    """Records requests; answers each with the next scripted response (or ``default``)."""

    def __init__(self, *answers: httpx.Response, default: Handler | None = None) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.default = default

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.answers:
            return self.answers.pop(0)
        assert self.default is not None, f"unexpected {request.method} {request.url}"
        return self.default(request)

    def client(self, **options: Any) -> Client:
        return Client("http://samq.test", api_key="k", transport=httpx.MockTransport(self), **options)

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.headers.get("content-type") == "application/json" else r.content
                for r in self.requests]  # fmt: skip


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": code, "message": f"{code} happened", "details": [{"loc": ["x"]}]}}
    return httpx.Response(status, json=body, headers=headers)


def test_segment_sends_the_job_body_with_the_key_and_prefer_wait() -> None:
    server = Server(httpx.Response(202, json=job_object()))
    box = {"x0": 1, "y0": 2, "x1": 30, "y1": 40}
    job = server.client().segment("upl_abc", [{"box": box}], model="sam2.1_hiera_tiny", wait=5, metadata={"a": 1})
    [request] = server.requests
    assert (request.method, request.url.path) == ("POST", "/v1/jobs")
    assert request.headers["Authorization"] == "Bearer k" and request.headers["Prefer"] == "wait=5"
    assert json.loads(request.content) == {
        "type": "segment",
        "image": {"upload": "upl_abc"},
        "prompts": [{"box": box}],
        "metadata": {"a": 1},
        "model": "sam2.1_hiera_tiny",
    }
    assert job.id == "job_1" and job["status"] == "queued" and not job.done


@pytest.mark.parametrize(
    ("media", "ref"),
    [
        ("https://example.com/a.jpg", {"url": "https://example.com/a.jpg"}),
        ("s3://bucket/a.jpg", {"s3": "s3://bucket/a.jpg"}),
        ({"image_id": "abc"}, {"image_id": "abc"}),
    ],
)
def test_references_are_sent_as_they_are(media: Any, ref: dict[str, Any]) -> None:
    server = Server(httpx.Response(202, json=job_object()))
    server.client().embed(media)
    assert json.loads(server.requests[0].content)["image"] == ref


def test_local_media_is_uploaded_first(tmp_path: Path) -> None:
    path = tmp_path / "cat.jpg"
    path.write_bytes(b"\xff\xd8jpeg")
    pixels = np.zeros((4, 6, 3), dtype=np.uint8)
    pixels[1, 2] = (255, 0, 0)
    uploads = [httpx.Response(201, json={"id": f"upl_{i}"}) for i in range(4)]
    server = Server(
        default=lambda r: uploads.pop(0) if r.url.path == "/v1/uploads" else httpx.Response(202, json=job_object())
    )
    client = server.client()
    for media in (path, str(path), b"raw", pixels):
        client.embed(media)
    sent = [(r.headers["content-type"], r.content) for r in server.requests if r.url.path == "/v1/uploads"]
    assert sent[0] == sent[1] == ("image/jpeg", b"\xff\xd8jpeg")
    assert sent[2] == ("application/octet-stream", b"raw")
    assert sent[3][0] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(sent[3][1]))), pixels)
    images = [json.loads(r.content)["image"] for r in server.requests if r.url.path == "/v1/jobs"]
    assert images == [{"upload": f"upl_{i}"} for i in range(4)]


def test_bad_media_is_refused_before_any_request(tmp_path: Path) -> None:
    server = Server()
    with pytest.raises(FileNotFoundError, match="no such file"):
        server.client().segment(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="uint8"):
        server.client().segment(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="a list"):
        server.client().concept("upl_1", "red car")  # a str is a sequence of str: refused at run time
    assert server.requests == []


def test_batch_of_local_files_uploads_them_and_a_manifest_naming_each(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(name.encode())
    ids = iter(range(10))
    server = Server(
        default=lambda r: (
            httpx.Response(201, json={"id": f"upl_{next(ids)}"})
            if r.url.path == "/v1/uploads"
            else httpx.Response(202, json=job_object(type="batch"))
        )
    )
    template = {"type": "concept", "prompts": [{"text": "car"}]}
    server.client().batch(template, [tmp_path / "a.png", tmp_path / "b.png"], export=["coco"])
    manifest = server.requests[2]
    assert manifest.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in manifest.content.splitlines()] == [
        {"upload": "upl_0", "name": "a.png"},
        {"upload": "upl_1", "name": "b.png"},
    ]
    assert json.loads(server.requests[3].content) == {
        "type": "batch",
        "template": template,
        "inputs": {"manifest": {"upload": "upl_2"}},
        "export": ["coco"],
    }
    server.client().batch(template, "s3://bucket/cars/")
    assert json.loads(server.requests[-1].content)["inputs"] == {"s3_prefix": "s3://bucket/cars/"}


def test_an_error_answer_raises_api_error_with_samqs_code() -> None:
    server = Server(error(422, "validation_error"))
    with pytest.raises(ApiError) as caught:
        server.client().submit({"type": "segment"})
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        422,
        "validation_error",
        "validation_error happened",
    )
    assert caught.value.details == [{"loc": ["x"]}] and len(server.requests) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_are_retried_after_what_retry_after_says(status: int) -> None:
    server = Server(error(status, "busy", {"Retry-After": "0.3"}), error(status, "busy", {"Retry-After": "0.3"}))
    server.default = lambda r: httpx.Response(202, json=job_object())
    started = time.monotonic()
    job = server.client().submit({"type": "segment"})
    assert job.id == "job_1" and len(server.requests) == 3
    assert time.monotonic() - started >= 0.6
    assert server.requests[0].content == server.requests[2].content


def test_retries_give_up_with_the_last_answer() -> None:
    server = Server(default=lambda r: error(429, "rate_limited", {"Retry-After": "0"}))
    with pytest.raises(ApiError) as caught:
        server.client(max_retries=2).get("job_1")
    assert caught.value.code == "rate_limited" and caught.value.retry_after == 0 and len(server.requests) == 3


def test_other_errors_and_posts_that_may_have_arrived_are_not_retried() -> None:
    server = Server(error(500, "internal"), default=lambda r: httpx.Response(202, json=job_object()))
    with pytest.raises(ApiError):
        server.client().submit({})
    calls = 0

    def drop(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ReadTimeout("no answer", request=request)

    with pytest.raises(httpx.ReadTimeout):
        Server(default=drop).client().submit({})
    assert calls == 1  # the job may have been admitted: sending it again could run it twice


def test_wait_polls_until_the_job_ends_and_reports_progress() -> None:
    states = [job_object(status="running", progress={"done": i, "total": 3, "unit": "items"}) for i in range(3)]
    states.append(job_object(status="succeeded", progress={"done": 3, "total": 3, "unit": "items"}))
    server = Server(*(httpx.Response(200, json=s) for s in states))
    seen: list[int] = []
    job = server.client().get("job_1").wait(interval=0.01, on_update=lambda j: seen.append(j["progress"]["done"]))
    assert job.status == "succeeded" and job.done and seen == [0, 1, 2, 3]


def test_wait_times_out_and_failed_jobs_raise_their_code_on_result() -> None:
    server = Server(default=lambda r: httpx.Response(200, json=job_object(status="running")))
    with pytest.raises(WaitTimeout):
        server.client().get("job_1").wait(timeout=0.2, interval=0.05)
    failed = job_object(status="failed", error={"code": "image_unreadable", "message": "bad", "retryable": False})
    job = Server(httpx.Response(200, json=failed)).client().get("job_1")
    with pytest.raises(JobFailed) as caught:
        job.result()
    assert caught.value.code == "image_unreadable"
    with pytest.raises(SamqError, match="wait"):
        Server(httpx.Response(200, json=job_object(status="running"))).client().get("job_1").to_detections()


def test_list_jobs_follows_cursors_up_to_the_limit() -> None:
    pages = [
        {"data": [job_object("job_3"), job_object("job_2")], "next_cursor": "2"},
        {"data": [job_object("job_1")], "next_cursor": None},
    ]
    server = Server(*(httpx.Response(200, json=p) for p in pages))
    assert [j.id for j in server.client().list_jobs(status="queued", page_size=2)] == ["job_3", "job_2", "job_1"]
    assert [dict(r.url.params) for r in server.requests] == [
        {"limit": "2", "status": "queued"},
        {"limit": "2", "status": "queued", "cursor": "2"},
    ]


def test_download_writes_result_files_without_the_key(tmp_path: Path) -> None:
    files = [
        {"name": "result.json", "url": "/files/r?sig=1", "bytes": 2},
        {"name": "masks/0.png", "url": "http://s3.test/m", "bytes": 3},
    ]
    done = job_object(status="succeeded", result={"url": "/files/r?sig=1", "files": files, "summary": {}})
    contents = {"/files/r": b"{}", "/m": b"png"}
    server = Server(httpx.Response(200, json=done), default=lambda r: httpx.Response(200, content=contents[r.url.path]))
    written = server.client().get("job_1").download(tmp_path)
    assert written == [tmp_path / "masks/0.png", tmp_path / "result.json"]
    assert (tmp_path / "masks/0.png").read_bytes() == b"png" and (tmp_path / "result.json").read_bytes() == b"{}"
    assert all("Authorization" not in r.headers for r in server.requests[1:])


def test_job_progress_prints_a_plain_line_per_change_when_not_a_terminal() -> None:
    out = io.StringIO()
    with JobProgress(out) as display:
        for done in (0, 0, 1, 1, 2):
            display.update(job_object(status="running", progress={"done": done, "total": 2, "unit": "items"}))
        display.update(job_object(status="succeeded", progress={"done": 2, "total": 2, "unit": "items"}))
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == [
        "job_1 running 0/2 items",
        "job_1 running 1/2 items",
        "job_1 running 2/2 items",
        "job_1 succeeded 2/2 items",
    ]
    assert "\r" not in out.getvalue()


def test_wait_backs_off_while_nothing_changes_and_speeds_up_on_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    states = [job_object(status="running", progress={"done": 0, "total": 2, "unit": "items"})] * 5
    states += [job_object(status="running", progress={"done": 1, "total": 2, "unit": "items"})]
    states += [job_object(status="succeeded", progress={"done": 2, "total": 2, "unit": "items"})]
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    server = Server(*(httpx.Response(200, json=state) for state in states))
    server.client().get("job_1").wait(interval=0.2, max_interval=0.6)
    assert pauses == pytest.approx([0.2, 0.3, 0.45, 0.6, 0.6, 0.2])  # progress moved: back to the short interval
