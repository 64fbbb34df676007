"""/openapi.json: every route the app serves has a row, and the document is valid OpenAPI 3.1 with or without keys.

What the server really answers is checked against the document by tests/integration/test_openapi_conformance.py.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask

from api.app import PUBLIC_PREFIXES, create_app
from api.services import build_services
from api.settings import ApiSettings
from storage.settings import StorageSettings
from tasks.cursors import CURSOR_PATTERN
from tasks.jobs import JobSpec
from tasks.settings import QueueSettings

JSON = "application/json"
ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}
ROBOFLOW_ERROR_BODY = {"$ref": "#/components/schemas/RoboflowErrorBody"}


def make_app(tmp_path: Path, keys: str = "") -> Flask:
    return create_app(
        build_services(
            api=ApiSettings(keys=keys),
            queue=QueueSettings(redis_url="redis://127.0.0.1:1/0"),  # never connected: /openapi.json needs no Redis
            storage=StorageSettings(backend="local", dir=tmp_path),
        )
    )


def served(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.get_json()
    return document


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(method, path): op for path, item in document["paths"].items() for method, op in item.items()}


def test_every_route_the_app_serves_is_documented(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    routes = {
        (method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.endpoint.startswith("viewer.")  # pages, not API routes
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    assert set(operations(served(app))) == routes


@pytest.mark.parametrize("keys", ["", "acme:k1"], ids=["open", "keys"])
def test_the_document_is_valid_and_says_when_a_key_is_needed(tmp_path: Path, keys: str) -> None:
    document = served(make_app(tmp_path, keys))
    schemathesis.openapi.from_dict(document).validate()
    assert ("security" in document) == bool(keys)
    for (method, path), op in operations(document).items():
        public = path.startswith(PUBLIC_PREFIXES)
        responses = op["responses"]
        assert ("401" in responses) == (bool(keys) and not public), (method, path)
        assert op.get("security") == ([] if public and keys else None), (method, path)
        for status, response in responses.items():
            if int(status) >= 400:  # the Roboflow-compatible routes' errors also carry Roboflow's top-level message
                expected = ROBOFLOW_ERROR_BODY if path.startswith(("/sam2/", "/sam3/")) else ERROR_BODY
                assert response["content"][JSON]["schema"] == expected, (method, path, status)
            if status in ("429", "503"):
                assert response["headers"]["Retry-After"]["required"], (method, path, status)


def test_the_job_request_is_the_discriminated_union_that_validates_jobs(tmp_path: Path) -> None:
    document = served(make_app(tmp_path))
    job_request = document["components"]["schemas"]["JobRequest"]
    union = typing.get_args(typing.get_args(JobSpec)[0])
    types = {typing.get_args(model.model_fields["type"].annotation)[0]: model.__name__ for model in union}
    assert job_request["discriminator"]["propertyName"] == "type"
    assert job_request["discriminator"]["mapping"] == {t: f"#/components/schemas/{name}" for t, name in types.items()}
    submit = document["paths"]["/v1/jobs"]["post"]
    assert submit["requestBody"]["content"][JSON]["schema"] == {"$ref": "#/components/schemas/JobRequest"}
    listing = {p["name"] for p in document["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert listing == {"status", "type", "limit", "cursor"}


def test_a_405_keeps_the_allow_header(tmp_path: Path) -> None:
    response = make_app(tmp_path).test_client().delete("/healthz")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert response.get_json()["error"]["code"] == "method_not_allowed"


def test_rules_a_client_can_hit_are_in_the_schema(tmp_path: Path) -> None:
    """A prompt needs a point or a box (a concept prompt a phrase or a box); a cursor is what next_cursor looks
    like; an upload is not empty."""
    schemas = served(make_app(tmp_path))["components"]["schemas"]
    assert [sorted(option["required"]) for option in schemas["Prompt"]["anyOf"]] == [["points"], ["box"]]
    assert [sorted(option["required"]) for option in schemas["ConceptPrompt"]["anyOf"]] == [["text"], ["boxes"]]
    listing = {p["name"]: p for p in operations(served(make_app(tmp_path)))[("get", "/v1/jobs")]["parameters"]}
    assert listing["cursor"]["schema"]["pattern"] == CURSOR_PATTERN
    upload = operations(served(make_app(tmp_path)))[("post", "/v1/uploads")]["requestBody"]["content"]
    assert all(
        media["schema"].get("minLength", media["schema"].get("properties", {}).get("file", {}).get("minLength")) == 1
        for media in upload.values()
    )
