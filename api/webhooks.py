"""The caller's webhook signing secret: read it, or create/rotate it."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.context import services, tenant
from api.views import WebhookSecret

bp = Blueprint("webhooks", __name__, url_prefix="/v1/webhooks")


@bp.get("/secret")
def current_secret() -> Response:
    """The secret that signs this tenant's webhooks (created on first use)."""
    return jsonify(WebhookSecret(secret=services().webhook_secrets.current(tenant())).model_dump(mode="json"))


@bp.post("/secret")
def rotate_secret() -> Response:
    """A new secret; the previous one keeps signing until ``previous_valid_until`` (SAMQ_WEBHOOK_SECRET_OVERLAP_SECONDS)."""
    secret, until = services().webhook_secrets.rotate(tenant())
    return jsonify(WebhookSecret(secret=secret, previous_valid_until=until).model_dump(mode="json"))
