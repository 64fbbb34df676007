"""One JSON error shape for every route: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

from typing import Any

import redis
from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from storage.base import StorageUnavailableError

RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """An error answered to the client as JSON with ``status``."""

    def __init__(
        self, status: int, code: str, message: str, details: list[Any] | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.retry_after = retry_after


def validation_details(error: ValidationError, union_tag: str | None = None) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "prompts.0.box", "message", "type"}``.

    For a discriminated union (job specs), ``union_tag`` is the body's ``type``: pydantic puts it first in every
    path, and clients should see the field path inside their own body.
    """
    details = []
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        if union_tag is not None and loc[:1] == [union_tag]:
            loc = loc[1:]
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["type"]
        details.append({"field": ".".join(str(part) for part in loc), "message": item["msg"], "type": item["type"]})
    return details


def render(error: ApiError) -> Response:
    response = jsonify({"error": {"code": error.code, "message": error.message, "details": error.details}})
    response.status_code = error.status
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return render(error)

    @app.errorhandler(ValidationError)
    def invalid(error: ValidationError) -> Response:
        return render(ApiError(422, "validation_error", "the request is invalid", validation_details(error)))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = (error.name or "error").lower().replace(" ", "_")
        message = error.description or error.name
        if status == 413:
            code = "payload_too_large"
            message = f"the request body exceeds {app.config['MAX_CONTENT_LENGTH']} bytes (SAMQ_API_MAX_BODY_BYTES)"
        return render(ApiError(status, code, message))

    @app.errorhandler(redis.RedisError)
    def broker_down(error: redis.RedisError) -> Response:
        app.logger.warning("redis unavailable: %s", error)
        return render(
            ApiError(
                503, "broker_unavailable", "the job store is unreachable; retry later", retry_after=RETRY_AFTER_SECONDS
            )
        )

    @app.errorhandler(StorageUnavailableError)
    def storage_down(error: StorageUnavailableError) -> Response:
        app.logger.warning("storage unavailable: %s", error)
        return render(
            ApiError(
                503,
                "storage_unavailable",
                "object storage is unreachable; retry later",
                retry_after=RETRY_AFTER_SECONDS,
            )
        )
