"""A small HTTP client for the samq API (the CLI's and the benchmark's), on the standard library only."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

TERMINAL = ("succeeded", "failed", "canceled")


class ClientError(Exception):
    """The API answered with an error (its JSON error body is kept)."""

    def __init__(self, status: int, body: Any) -> None:
        message = body.get("error", {}).get("message", body) if isinstance(body, dict) else body
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.body = body


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 70.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout

    def upload(self, data: bytes, content_type: str) -> dict[str, Any]:
        return self.request("POST", "/v1/uploads", data, {"Content-Type": content_type})

    def submit(self, job: dict[str, Any], wait: int = 0) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", **({"Prefer": f"wait={wait}"} if wait else {})}
        return self.request("POST", "/v1/jobs", json.dumps(job).encode(), headers)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}")

    def result(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}/result")

    def download(self, url: str, path: Path) -> None:
        """Stream a result file's presigned URL into ``path`` (via ``path.part``, so no torn file is left).

        No API key is sent: the URL carries its own signature, and S3 refuses a request with two.
        """
        partial = path.with_name(path.name + ".part")
        try:
            with (
                urllib.request.urlopen(urljoin(self.base_url + "/", url), timeout=self._timeout) as response,
                partial.open("wb") as out,
            ):
                shutil.copyfileobj(response, out, 1 << 20)
            partial.replace(path)
        except urllib.error.HTTPError as e:
            raise _error(e) from e
        finally:
            partial.unlink(missing_ok=True)

    def wait(
        self,
        job_id: str,
        timeout: float = 3600,
        interval: float = 0.2,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is terminal; ``on_update`` sees every poll (for progress display)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_update is not None:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s")
            time.sleep(interval)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        all_headers = dict(headers or {})
        if self._api_key:
            all_headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as e:
            raise _error(e) from e


def _error(e: urllib.error.HTTPError) -> ClientError:
    raw = e.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = raw.decode(errors="replace")
    return ClientError(e.code, body)
