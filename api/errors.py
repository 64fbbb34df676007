"""One JSON error shape for every route (``{"error": {"code", "message", "details"}}``), and the one place where
errors become HTTP statuses.

Routes raise ``ApiError`` for what only HTTP knows (a malformed body, a missing upload field), and let the job
store's ``RequestError``s, pydantic's ``ValidationError`` and unreachable backends propagate: ``STATUS`` and the
handlers below answer them.
"""

from __future__ import annotations

from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from storage.base import BackendUnavailableError
from tasks.errors import (
    BrokerUnavailableError,
    IdempotencyKeyReusedError,
    InvalidCursorError,
    JobNotCancelableError,
    QuotaExceededError,
    SamqError,
    StorageUnavailableError,
)
from tasks.specs import error_code, validation_details

RETRY_AFTER_SECONDS = 5
ROBOFLOW_BLUEPRINT = "roboflow"
"""The Roboflow-compatible routes' blueprint: their errors also carry a top-level ``message``."""

STATUS: dict[type[SamqError], int] = {
    QuotaExceededError: 429,
    IdempotencyKeyReusedError: 422,
    InvalidCursorError: 422,
    JobNotCancelableError: 409,
    BrokerUnavailableError: 503,
    StorageUnavailableError: 503,
}
"""The HTTP status of each error the routes let through (the first class in this order that matches)."""


class ApiError(SamqError):
    """An error answered to the client as JSON with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, details: list[Any] | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details or []
        self.retry_after = retry_after


def invalid(field: str, message: str, code: str = "validation_error") -> ApiError:
    """A 422 naming the request field at fault."""
    return ApiError(422, code, message, [{"field": field, "message": message}])


def answer(error: SamqError) -> ApiError:
    """``error`` as it is answered: its code and message, the status of ``STATUS``, a ``Retry-After`` on 429/503."""
    if isinstance(error, ApiError):
        return error
    status = next((s for cls, s in STATUS.items() if isinstance(error, cls)), 500)
    if status == 500:
        return ApiError(500, "internal_error", "internal error; see the API log")
    field = getattr(error, "field", None)
    details = [{"field": field, "message": error.message}] if field else []
    return ApiError(
        status, error.code, error.message, details, retry_after=RETRY_AFTER_SECONDS if status in (429, 503) else None
    )


def render(error: ApiError) -> Response:
    body: dict[str, Any] = {"error": {"code": error.code, "message": error.message, "details": error.details}}
    if request.blueprint == ROBOFLOW_BLUEPRINT:  # Roboflow's clients show exactly this field
        first = error.details[0] if error.details else {}
        said = first.get("message") if isinstance(first, dict) else None
        adds = first.get("field") and said and said != error.message  # the field at fault, unless said already
        body["message"] = f"{error.message}: {first['field']}: {said}" if adds else error.message
    response = jsonify(body)
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(SamqError)
    def samq_error(error: SamqError) -> Response:
        answered = answer(error)
        if answered.status == 500:
            app.logger.error("unmapped %s: %s", type(error).__name__, error.message)
        return render(answered)

    @app.errorhandler(ValidationError)
    def invalid_body(error: ValidationError) -> Response:
        return render(ApiError(422, error_code(error), "the request is invalid", validation_details(error)))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = (error.name or "error").lower().replace(" ", "_")
        message = error.description or error.name
        if status == 413:
            code = "payload_too_large"
            message = f"the request body exceeds {app.config['MAX_CONTENT_LENGTH']} bytes (SAMQ_API_MAX_BODY_BYTES)"
        response = render(ApiError(status, code, message))
        for name, value in error.get_headers():  # a 405's Allow (RFC 9110), which the JSON body must not drop
            if name.lower() == "allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(redis.RedisError)
    def broker_down(error: redis.RedisError) -> Response:
        app.logger.warning("redis unavailable: %s", error)
        return render(answer(BrokerUnavailableError("the job store is unreachable; retry later")))

    @app.errorhandler(BackendUnavailableError)
    def storage_down(error: BackendUnavailableError) -> Response:
        app.logger.warning("storage unavailable: %s", error)
        return render(answer(StorageUnavailableError("object storage is unreachable; retry later")))
