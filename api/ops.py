"""Operations routes: liveness, readiness, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import redis
from flask import Blueprint, Response, current_app, jsonify
from flask.blueprints import BlueprintSetupState
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from api.context import services
from api.errors import RETRY_AFTER_SECONDS, ApiError
from api.metrics import HttpMetrics, install
from api.openapi import build_openapi
from api.views import Health
from storage.base import StorageError

bp = Blueprint("ops", __name__)


@bp.record_once
def count_requests(state: BlueprintSetupState) -> None:
    """The app that serves ``/metrics`` counts its requests (``api.metrics``), from its registration on."""
    install(state.app, state.app.extensions["samq"].redis)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify(Health(status="ok").model_dump())


@bp.get("/readyz")
def readyz() -> Response:
    svc = services()
    problems = []
    try:
        svc.redis.ping()
    except redis.RedisError as e:
        problems.append({"component": "broker", "message": str(e)})
    try:
        svc.storage_slots.call(svc.objects.ping)
    except StorageError as e:
        problems.append({"component": "storage", "message": str(e)})
    except ApiError as e:  # every storage slot is taken: storage is stalling
        problems.append({"component": "storage", "message": e.message})
    if problems:
        raise ApiError(503, "not_ready", "a dependency is unreachable", problems, retry_after=RETRY_AFTER_SECONDS)
    return jsonify(Health(status="ready").model_dump())


@bp.get("/metrics")
def metrics() -> Response:
    http: HttpMetrics = current_app.extensions["samq_metrics"]
    http.prefill(current_app.url_map)  # every route's series, whichever blueprint registered it, and when
    return Response(generate_latest(http.registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(build_openapi(package_version(), keys=current_app.config["SAMQ_KEYS"]))


def package_version() -> str:
    try:
        return version("samq")
    except PackageNotFoundError:
        return "0.0.0"
