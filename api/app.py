"""The Flask app factory."""

from __future__ import annotations

from flask import Flask, g, request

from api import jobs, ops, uploads
from api.auth import Tenants
from api.errors import register_error_handlers
from api.services import Services, build_services

PUBLIC_PREFIXES = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/v1/files/")


def create_app(services: Services | None = None) -> Flask:
    services = services or build_services()
    app = Flask("samq")
    app.config["MAX_CONTENT_LENGTH"] = services.api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["samq"] = services
    tenants = Tenants(services.api.keys.get_secret_value())

    @app.before_request
    def authenticate() -> None:
        if not request.path.startswith(PUBLIC_PREFIXES):
            g.tenant = tenants.resolve(request.headers.get("Authorization"))

    register_error_handlers(app)
    for blueprint in (jobs.bp, uploads.bp, ops.bp):
        app.register_blueprint(blueprint)
    return app
