"""Response models of the API (the public shapes of API.md) beyond the job object (``tasks.views``).

The same models generate /openapi.json.
"""

from __future__ import annotations

from typing import Any, Literal

from tasks.views import JobObject, Timestamp, View
from tasks.webhooks import DeliveryAttempt


class JobList(View):
    data: list[JobObject]
    next_cursor: str | None


class UploadCreated(View):
    id: str
    bytes: int
    sha256: str
    content_type: str


class Health(View):
    """``GET /healthz`` (``ok``) and ``GET /readyz`` (``ready``)."""

    status: Literal["ok", "ready"]


class ErrorDetail(View):
    code: str
    message: str
    details: list[Any]


class ErrorBody(View):
    error: ErrorDetail


class RoboflowErrorBody(ErrorBody):
    """The Roboflow-compatible routes' errors: samq's error object and Roboflow's top-level ``message`` (what
    Roboflow's client shows)."""

    message: str


class WebhookSecret(View):
    secret: str
    """``whsec_`` + base64 of 32 random bytes (Standard Webhooks)."""
    previous_valid_until: Timestamp | None = None
    """After a rotation: until when the previous secret still signs (both signatures are sent meanwhile)."""


class DeliveryList(View):
    data: list[DeliveryAttempt]
