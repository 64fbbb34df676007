"""The Python client of the samq API, on httpx: a method per job type, uploads, waiting, cancel, listing, results.

    from samq import Client

    client = Client("http://127.0.0.1:8000")
    job = client.segment("photo.jpg", prompts=[{"box": {"x0": 10, "y0": 20, "x1": 200, "y1": 180}}])
    detections = job.wait(progress=True).to_detections()   # supervision's sv.Detections

Refusals the server marks as momentary (429, 503) are retried, waiting what ``Retry-After`` says; so is a request
that never reached the server. Every other error answer raises :class:`~samq.errors.ApiError` with samq's code.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from samq.errors import ApiError
from samq.jobs import Job
from samq.media import Media, content_type_of, media_ref

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({429, 503})
"""Refusals that say "not now": the request was not acted on, so sending it again is safe."""
MAX_RETRY_WAIT = 60.0
"""The longest pause between two tries, whatever ``Retry-After`` asks."""


class Client:
    """A samq API at ``url`` (default ``$SAMQ_URL``, else the embedded default), with ``api_key`` (default
    ``$SAMQ_API_KEY``). ``timeout`` bounds each HTTP request; ``max_retries`` the tries after a 429/503 or a
    connection failure. Close it (or use it as a context manager) to free its connections."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 70.0,
        max_retries: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (url or os.environ.get("SAMQ_URL") or DEFAULT_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else os.environ.get("SAMQ_API_KEY")
        self._max_retries = max_retries
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # Jobs, one method per type. ``options`` are the job's other fields as the API names them (``output``,
    # ``multimask_output``, ``metadata``, ``webhook``, ``threshold``, …); ``wait`` (≤ 60 s) holds the request until
    # the job ends, if it ends by then.

    def segment(
        self,
        image: Media,
        prompts: Sequence[Mapping[str, Any]] = (),
        *,
        model: str | None = None,
        wait: int = 0,
        **options: Any,
    ) -> Job:
        """SAM2 (or SAM3's tracker) on one image: one instance per prompt (``points``, ``box``, ``mask_input``)."""
        body = {"type": "segment", "image": self.media(image), "prompts": list(prompts), **options}
        return self.submit(_with_model(body, model), wait=wait)

    def embed(self, image: Media, *, model: str | None = None, wait: int = 0, **options: Any) -> Job:
        """Compute and cache the image's embedding; later jobs pass ``{"image_id": job.summary["image_id"]}``."""
        return self.submit(_with_model({"type": "embed", "image": self.media(image), **options}, model), wait=wait)

    def concept(
        self,
        image: Media,
        prompts: Sequence[str | Mapping[str, Any]],
        *,
        model: str | None = None,
        wait: int = 0,
        **options: Any,
    ) -> Job:
        """SAM3: every instance of each phrase (a str) or prompt (``{"text", "boxes", "threshold"}``)."""
        body = {"type": "concept", "image": self.media(image), "prompts": _concept_prompts(prompts), **options}
        return self.submit(_with_model(body, model), wait=wait)

    def everything(self, image: Media, *, model: str | None = None, wait: int = 0, **params: Any) -> Job:
        """Every object mask of the image (SAM2's automatic mask generator); ``params`` under the generator's names
        (``points_per_side``, ``pred_iou_thresh``, ``crop_n_layers``, …) and ``max_masks``."""
        body = {"type": "everything", "image": self.media(image), **params}
        return self.submit(_with_model(body, model), wait=wait)

    def track(
        self,
        video: Media,
        objects: Sequence[Mapping[str, Any]] = (),
        *,
        concepts: Sequence[str] = (),
        model: str | None = None,
        **options: Any,
    ) -> Job:
        """Objects seeded by box/points (``{"id", "frame", "box", "points", "label"}``), or with SAM3 every
        instance of ``concepts``, tracked through the video."""
        body: dict[str, Any] = {"type": "track", "video": self.media(video), **options}
        if objects:
            body["objects"] = list(objects)
        if concepts:
            body["concepts"] = list(concepts)
        return self.submit(_with_model(body, model))

    def batch(
        self,
        template: Mapping[str, Any],
        inputs: str | Sequence[Media] | Mapping[str, Any],
        *,
        names: Sequence[str] | None = None,
        **options: Any,
    ) -> Job:
        """One ``segment``/``concept``/``track`` template (a job body without its media) over many inputs: an
        ``s3://`` prefix, a list of media (local ones uploaded, then listed in a manifest; ``names`` are their COCO
        file names, by default a path's name) or the API's own ``inputs`` object."""
        if isinstance(inputs, str):
            inputs = {"s3_prefix": inputs}
        elif not isinstance(inputs, Mapping):
            inputs = self._manifest(inputs, names)
        return self.submit({"type": "batch", "template": dict(template), "inputs": dict(inputs), **options})

    def submit(self, body: Mapping[str, Any], *, wait: int = 0, idempotency_key: str | None = None) -> Job:
        """Any job body as ``POST /v1/jobs`` takes it."""
        headers = {"Prefer": f"wait={wait}"} if wait else {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return Job(self.request("POST", "/v1/jobs", json=body, headers=headers), self)

    # Reading and steering jobs.

    def get(self, job_id: str) -> Job:
        return Job(self.request("GET", f"/v1/jobs/{job_id}"), self)

    def wait(self, job_id: str, timeout: float | None = None, **options: Any) -> Job:
        """The job once it ended (see :meth:`Job.wait`)."""
        return self.get(job_id).wait(timeout, **options)

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one at once, a running one at its next checkpoint. ApiError 409 if it ended."""
        return Job(self.request("POST", f"/v1/jobs/{job_id}/cancel"), self)

    def list_jobs(
        self, *, status: str | None = None, type: str | None = None, limit: int | None = None, page_size: int = 100
    ) -> Iterator[Job]:
        """Jobs newest first, following the pages; ``limit`` caps how many (default all)."""
        params: dict[str, Any] = {"limit": min(page_size, limit or page_size)}
        params |= {k: v for k, v in (("status", status), ("type", type)) if v is not None}
        seen = 0
        while True:
            page = self.request("GET", "/v1/jobs", params=params)
            for data in page["data"]:
                yield Job(data, self)
                seen += 1
                if limit is not None and seen >= limit:
                    return
            if not page["next_cursor"]:
                return
            params["cursor"] = page["next_cursor"]

    def result(self, job_id: str) -> Any:
        """The job's result document (``result.json``); ApiError 409 ``job_not_succeeded`` before it exists."""
        return self.request("GET", f"/v1/jobs/{job_id}/result")

    # Media.

    def upload(self, data: bytes, content_type: str = "application/octet-stream") -> dict[str, Any]:
        """Store bytes for later jobs: ``{"id": "upl_…", "bytes", "sha256", "content_type"}``."""
        answer: dict[str, Any] = self.request(
            "POST", "/v1/uploads", content=data, headers={"Content-Type": content_type}
        )
        return answer

    def upload_file(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        return self.upload(Path(path).read_bytes(), content_type_of(Path(path)))

    def media(self, media: Media) -> dict[str, Any]:
        """The API's media reference for ``media`` (uploading it when it is local)."""
        return media_ref(media, self.upload)

    def download(self, url: str, path: Path) -> Path:
        """Stream a result file's URL into ``path`` (via ``path.part``, so no torn file is left). No API key is
        sent: the URL carries its own signature (S3 refuses a request with two)."""
        partial = path.with_name(path.name + ".part")
        try:
            with self._http.stream("GET", url) as response, partial.open("wb") as out:
                if response.is_error:
                    response.read()
                    raise _api_error(response)
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def fetch(self, url: str) -> bytes:
        """A result file's bytes."""
        response = self._http.get(url)
        if response.is_error:
            raise _api_error(response)
        return response.content

    # HTTP.

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """One API call, retried on 429/503 (after ``Retry-After``) and on connection failures; the decoded JSON."""
        all_headers = dict(headers or {})
        if self._api_key:
            all_headers["Authorization"] = f"Bearer {self._api_key}"

        def attempt() -> Any:
            response = self._http.request(method, path, json=json, content=content, headers=all_headers, params=params)
            if response.is_error:
                raise _api_error(response)
            return response.json()

        retrying = Retrying(
            stop=stop_after_attempt(self._max_retries + 1),
            wait=_retry_wait,
            retry=retry_if_exception(lambda e: _retryable(e, method)),
            reraise=True,
        )
        return retrying(attempt)

    def _manifest(self, media: Sequence[Media], names: Sequence[str] | None) -> dict[str, Any]:
        if names is not None and len(names) != len(media):
            raise ValueError(f"{len(names)} names for {len(media)} inputs")
        lines = []
        for i, item in enumerate(media):
            line = self.media(item)
            name = names[i] if names is not None else Path(item).name if isinstance(item, str | os.PathLike) else None
            lines.append(jsonlib.dumps(line | ({"name": name} if name else {})) + "\n")
        return {"manifest": {"upload": self.upload("".join(lines).encode(), "application/x-ndjson")["id"]}}


def _with_model(body: dict[str, Any], model: str | None) -> dict[str, Any]:
    return body if model is None else body | {"model": model}


def _concept_prompts(prompts: Sequence[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(prompts, str):
        raise TypeError("prompts is a list: concept(image, ['red car']), not concept(image, 'red car')")
    return [{"text": p} if isinstance(p, str) else dict(p) for p in prompts]


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return ApiError(response.status_code, body, _retry_after(response.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _retryable(error: BaseException, method: str) -> bool:
    if isinstance(error, ApiError):
        return error.status in RETRY_STATUSES
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        return True  # the server never saw the request
    return isinstance(error, httpx.TransportError) and method == "GET"


_backoff = wait_exponential_jitter(multiplier=0.5, max=10)


def _retry_wait(state: RetryCallState) -> float:
    """What the server's ``Retry-After`` asked, else exponential backoff with jitter."""
    error = state.outcome.exception() if state.outcome else None
    if isinstance(error, ApiError) and error.retry_after is not None:
        return min(error.retry_after, MAX_RETRY_WAIT)
    return float(_backoff(state))
