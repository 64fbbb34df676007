"""The Python client's exceptions: one root, the API's refusals (with samq's error code), a job's failure, a wait
that ran out."""

from __future__ import annotations

from typing import Any


class SamqError(Exception):
    """Root of everything the client raises on purpose."""


class ApiError(SamqError):
    """The API answered with an error: its HTTP status, samq's ``error.code`` and the whole JSON body."""

    def __init__(self, status: int, body: Any, retry_after: float | None = None) -> None:
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        self.status = status
        self.body = body
        self.code: str = str(error.get("code", f"http_{status}"))
        self.message: str = str(error.get("message", body if isinstance(body, str) else ""))
        self.details: list[Any] = list(error.get("details") or [])
        self.retry_after = retry_after
        super().__init__(f"HTTP {status} {self.code}: {self.message}")


class JobFailed(SamqError):
    """A job ended ``failed`` (or ``canceled``) where its result was asked for; ``code`` is its ``error.code``."""

    def __init__(self, job_id: str, status: str, error: dict[str, Any] | None) -> None:
        self.job_id = job_id
        self.status = status
        self.code: str = str((error or {}).get("code", status))
        self.message: str = str((error or {}).get("message", f"the job is {status}"))
        self.retryable: bool = bool((error or {}).get("retryable", False))
        super().__init__(f"job {job_id} {status}: {self.code}: {self.message}")


class WaitTimeout(SamqError, TimeoutError):
    """A job was still running when ``wait`` gave up; the job goes on on the server."""
