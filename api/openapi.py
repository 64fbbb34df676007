"""/openapi.json, generated from the same pydantic models that validate requests and shape responses."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from api.views import ErrorBody, JobList, JobObject, UploadCreated
from tasks.specs import JobSpec

REF = "#/components/schemas/{model}"


def build_openapi(version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    job_request = TypeAdapter(JobSpec).json_schema(ref_template=REF)
    schemas.update(job_request.pop("$defs", {}))
    schemas["JobRequest"] = job_request
    _, defs = models_json_schema(
        [(m, "serialization") for m in (JobObject, JobList, UploadCreated, ErrorBody)], ref_template=REF
    )
    schemas.update(defs.get("$defs", {}))

    def body(name: str) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": {"$ref": REF.format(model=name)}}}}

    def answer(description: str, name: str) -> dict[str, Any]:
        return {"description": description, **body(name)}

    errors = {str(code): answer(text, "ErrorBody") for code, text in ERRORS.items()}
    job_id = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "samq", "version": version, "description": "Asynchronous Segment Anything jobs."},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/jobs": {
                "post": {
                    "summary": "Submit a job",
                    "parameters": [
                        {"name": "Prefer", "in": "header", "schema": {"type": "string", "pattern": "^wait=\\d+$"}}
                    ],
                    "requestBody": {"required": True, **body("JobRequest")},
                    "responses": {
                        "202": answer("Accepted; poll the Location", "JobObject"),
                        "200": answer("Finished within Prefer: wait", "JobObject"),
                        **errors,
                    },
                },
                "get": {
                    "summary": "List jobs, newest first",
                    "parameters": [
                        {"name": "status", "in": "query", "schema": {"$ref": REF.format(model="JobStatus")}},
                        {"name": "type", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": answer("A page of jobs", "JobList"), **errors},
                },
            },
            "/v1/jobs/{job_id}": {
                "get": {"parameters": [job_id], "responses": {"200": answer("The job", "JobObject"), **errors}}
            },
            "/v1/jobs/{job_id}/cancel": {
                "post": {
                    "parameters": [job_id],
                    "responses": {"202": answer("Canceled or canceling", "JobObject"), **errors},
                }
            },
            "/v1/jobs/{job_id}/result": {
                "get": {
                    "parameters": [job_id],
                    "responses": {
                        "200": {
                            "description": "The result document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **errors,
                    },
                }
            },
            "/v1/uploads": {
                "post": {
                    "summary": "Upload media (raw body or multipart field 'file')",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                            "image/*": {"schema": {"type": "string", "format": "binary"}},
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"file": {"type": "string", "format": "binary"}},
                                }
                            },
                        },
                    },
                    "responses": {"201": answer("Stored", "UploadCreated"), **errors},
                }
            },
            "/healthz": {"get": {"security": [], "responses": {"200": {"description": "The process is up"}}}},
            "/readyz": {
                "get": {
                    "security": [],
                    "responses": {
                        "200": {"description": "Broker and storage reachable"},
                        "503": answer("Not ready", "ErrorBody"),
                    },
                }
            },
            "/metrics": {"get": {"security": [], "responses": {"200": {"description": "Prometheus text format"}}}},
        },
    }


ERRORS = {
    400: "Malformed request",
    401: "Missing or invalid API key",
    404: "Unknown id (or another tenant's)",
    409: "Wrong state",
    413: "Too large",
    415: "Unsupported media type",
    422: "Validation error (details carry field paths)",
    503: "Broker or storage unavailable (Retry-After)",
}
