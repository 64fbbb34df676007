"""The Flask app factory."""

from __future__ import annotations

from flask import Flask, g, request

from api import inputs, jobs, ops, uploads, viewer, webhooks
from api.auth import Tenants
from api.errors import ApiError, register_error_handlers
from api.roboflow import routes as roboflow
from api.services import Services, build_services

PUBLIC_PREFIXES = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/files/", *viewer.PREFIXES)
ROBOFLOW_KEY_REQUIRED = (
    "a valid API key is required: the api_key field of the body, the api_key query parameter, "
    "or an 'Authorization: Bearer <api key>' header"
)


def create_app(services: Services | None = None) -> Flask:
    services = services or build_services()
    app = Flask("samq")
    app.config["MAX_CONTENT_LENGTH"] = services.api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["samq"] = services
    tenants = Tenants.from_settings(services.api)

    @app.before_request
    def authenticate() -> None:
        if request.blueprint == roboflow.bp.name:
            g.tenant = tenants.resolve_key(roboflow.api_key(), ROBOFLOW_KEY_REQUIRED)
        elif not request.path.startswith(PUBLIC_PREFIXES):
            g.tenant = tenants.resolve(request.headers.get("Authorization"))
        if "tenant" in g:
            limits = services.api.limits_for(g.tenant)
            wait = services.rate_limiter.retry_after(g.tenant, limits)
            if wait:
                raise ApiError(
                    429,
                    "rate_limited",
                    f"more than {limits.rate_burst} requests at once or {limits.rate_per_second:g}/s sustained "
                    "for this tenant (SAMQ_API_RATE_BURST, SAMQ_API_RATE_PER_SECOND); retry later",
                    retry_after=wait,
                )

    register_error_handlers(app)
    app.config["SAMQ_KEYS"] = not tenants.open  # /openapi.json says whether a key is needed
    for blueprint in (jobs.bp, inputs.bp, uploads.bp, ops.bp, webhooks.bp, roboflow.bp, viewer.bp):
        app.register_blueprint(blueprint)
    return app
