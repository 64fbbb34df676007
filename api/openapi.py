"""/openapi.json, generated from the same pydantic models that validate requests and shape responses.

Every route the app serves is one row of ``ROUTES``: what it answers on success, which errors it can give, its
parameters and its body. ``build_openapi`` turns the rows into an OpenAPI 3.1 document; the error shape, the errors
every non-public route shares and their headers are added here once, never per row. A new route needs a new row
(tests/integration/test_openapi_conformance.py then fuzzes it against the real server with schemathesis).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from api.admission import MAX_IDEMPOTENCY_KEY_CHARS
from api.inputs import InputQuery, JobInput
from api.jobs import ListQuery
from api.roboflow.requests import ConceptRequest, Sam2Request
from api.roboflow.responses import RESPONSE_MODELS
from api.views import DeliveryList, ErrorBody, Health, JobList, RoboflowErrorBody, UploadCreated, WebhookSecret
from tasks import documents
from tasks.jobs import JobSpec
from tasks.views import JobObject

Schema = dict[str, Any]

REF = "#/components/schemas/{model}"
JSON = "application/json"
BINARY: Schema = {"type": "string", "format": "binary"}
MEDIA: Schema = {**BINARY, "minLength": 1}
"""An upload's bytes: an empty one is refused (400 empty_upload)."""

REQUESTS: Mapping[str, Any] = {"JobRequest": JobSpec, "Sam2Request": Sam2Request, "ConceptRequest": ConceptRequest}
"""Request bodies by component name (validation mode)."""
RESPONSES: tuple[type[BaseModel], ...] = (
    JobObject,
    JobList,
    JobInput,
    DeliveryList,
    UploadCreated,
    WebhookSecret,
    ErrorBody,
    Health,
    RoboflowErrorBody,
    *RESPONSE_MODELS,
)
"""Response bodies (serialization mode). A model that differs between the modes is named ``Name-Input`` and
``Name-Output`` by pydantic, so requests and responses never overwrite each other's definitions."""
QUERIES: tuple[type[BaseModel], ...] = (ListQuery, InputQuery)
"""Models that validate a query string: their fields become query parameters, not components."""

ERRORS: Mapping[int, str] = {
    400: "Malformed request",
    401: "Missing or invalid API key",
    403: "Invalid or expired signature",
    404: "Unknown id (or another tenant's)",
    409: "Wrong state",
    410: "Gone: the result is no longer stored",
    413: "Too large",
    415: "Unsupported media type",
    422: "Validation error (details carry field paths)",
    429: "Rate limited, or too many unfinished jobs (Retry-After)",
    500: "The job failed on the server's side (worker_lost, timeout, model_unavailable)",
    502: "The job could not fetch its image (media_fetch_failed)",
    503: "Broker or storage unavailable (Retry-After)",
    504: "The job outlived the call's wait; it goes on (details name the job)",
}
TENANT_ERRORS = (429, 503)
"""What every non-public route may answer before its own code runs (the tenant's rate limit, Redis); and 401 when
the server has API keys."""

HEADERS: Mapping[str, Schema] = {
    "Location": {"description": "The job's URL", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}},
}
ERROR_HEADERS: Mapping[int, tuple[str, ...]] = {429: ("Retry-After",), 503: ("Retry-After",), 504: ("Retry-After",)}


@dataclass(frozen=True)
class Answer:
    """A success response: its body (a component name, an inline schema, or none) and its required headers."""

    description: str
    body: str | Schema | None = None
    media_type: str = JSON
    headers: tuple[str, ...] = ()
    alternatives: tuple[tuple[str, str | Schema], ...] = ()
    """Other media types the same status may carry, with their bodies."""


@dataclass(frozen=True)
class Route:
    method: Literal["get", "post", "put", "patch", "delete"]
    path: str
    operation_id: str
    summary: str
    tag: str
    answers: Mapping[int, Answer]
    errors: tuple[int, ...] = ()
    """The route's own errors (keys of ERRORS); non-public routes also get TENANT_ERRORS, and 401."""
    parameters: tuple[Schema, ...] = ()
    query: type[BaseModel] | None = None
    """A model of QUERIES whose fields are the query parameters."""
    body: Mapping[str, str | Schema] | None = None
    """Request body by media type: a component name or an inline schema."""
    public: bool = False
    """No API key needed."""
    description: str = ""
    error_body: str = "ErrorBody"


def path_id(name: str, prefix: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": f"An id this API handed out ({prefix}_…)",
        "schema": {"type": "string", "pattern": f"^{prefix}_[0-9A-Za-z]+$"},
    }


def header(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "header", "required": False, "description": description, "schema": schema}


JOB_ID = path_id("job_id", "job")
UPLOAD_TYPES = ("image/*", "video/*", "application/octet-stream", "application/x-ndjson", "application/jsonl")

ROUTES: tuple[Route, ...] = (
    Route(
        "post",
        "/v1/jobs",
        "submitJob",
        "Submit a job",
        "jobs",
        {
            202: Answer("Accepted; poll the Location", "JobObject", headers=("Location",)),
            200: Answer("Finished within Prefer: wait, or the first job of this Idempotency-Key", "JobObject"),
        },
        errors=(400, 413, 415, 422),
        parameters=(
            header(
                "Prefer",
                "wait=N: hold the response up to N seconds (at most SAMQ_API_MAX_WAIT_SECONDS); other preferences "
                "are ignored",
                {"type": "string"},
            ),
            header(
                "Idempotency-Key",
                "The same key with the same body within 24 h answers the first job (200) and creates nothing",
                {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
            ),
        ),
        body={JSON: "JobRequest"},
    ),
    Route(
        "get",
        "/v1/jobs",
        "listJobs",
        "List jobs, newest first",
        "jobs",
        {200: Answer("A page of jobs; pass next_cursor as cursor for the next one", "JobList")},
        errors=(422,),
        query=ListQuery,
    ),
    Route(
        "get",
        "/v1/jobs/{job_id}",
        "getJob",
        "A job",
        "jobs",
        {200: Answer("The job", "JobObject")},
        errors=(404,),
        parameters=(JOB_ID,),
    ),
    Route(
        "post",
        "/v1/jobs/{job_id}/cancel",
        "cancelJob",
        "Cancel a queued or running job",
        "jobs",
        {202: Answer("Canceled (was queued) or canceling (running)", "JobObject")},
        errors=(404, 409),
        parameters=(JOB_ID,),
    ),
    Route(
        "get",
        "/v1/jobs/{job_id}/result",
        "getJobResult",
        "The result document of a succeeded job",
        "jobs",
        {200: Answer("The result document, by the job's type (ResultDocument)", "ResultDocument")},
        errors=(404, 409, 410),
        parameters=(JOB_ID,),
    ),
    Route(
        "get",
        "/v1/jobs/{job_id}/items/{index}",
        "getBatchItemResult",
        "The result document of one item of a batch job",
        "jobs",
        {200: Answer("The item's result document, by the template's type (ItemDocument)", "ItemDocument")},
        errors=(404, 409, 410),
        parameters=(
            JOB_ID,
            {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
        ),
        description="404 for an index past the batch's items; 409 (item_not_done, item_failed) until it succeeded.",
    ),
    Route(
        "get",
        "/v1/jobs/{job_id}/input",
        "getJobInput",
        "The job's request as stored, and a link to its image or video (a batch item's with item)",
        "jobs",
        {200: Answer("The request and a media link (null when there is none to read)", "JobInput")},
        errors=(404, 422),
        parameters=(JOB_ID,),
        query=InputQuery,
    ),
    Route(
        "get",
        "/v1/jobs/{job_id}/deliveries",
        "listJobDeliveries",
        "Webhook delivery attempts of the job's events, oldest first",
        "webhooks",
        {200: Answer("The delivery log", "DeliveryList")},
        errors=(404,),
        parameters=(JOB_ID,),
    ),
    Route(
        "get",
        "/v1/webhooks/secret",
        "getWebhookSecret",
        "The secret that signs this tenant's webhooks (created on first use)",
        "webhooks",
        {200: Answer("The current secret", "WebhookSecret")},
    ),
    Route(
        "post",
        "/v1/webhooks/secret",
        "rotateWebhookSecret",
        "Create or rotate the webhook secret",
        "webhooks",
        {200: Answer("The new secret; the previous one signs too until previous_valid_until", "WebhookSecret")},
    ),
    Route(
        "post",
        "/v1/uploads",
        "createUpload",
        "Upload media for later jobs",
        "uploads",
        {201: Answer("Stored", "UploadCreated")},
        errors=(400, 413, 415),
        body={
            **dict.fromkeys(UPLOAD_TYPES, MEDIA),
            "multipart/form-data": {"type": "object", "properties": {"file": MEDIA}, "required": ["file"]},
        },
        description="The media bytes as the raw body (with their Content-Type), or as the multipart field 'file'.",
    ),
    Route(
        "get",
        "/v1/files/{key}",
        "downloadFile",
        "A presigned download (local storage backend)",
        "files",
        {200: Answer("The file, with its own Content-Type", {}, media_type="*/*")},
        errors=(403, 404),
        parameters=(
            {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "expires", "in": "query", "required": True, "schema": {"type": "integer"}},
            {"name": "signature", "in": "query", "required": True, "schema": {"type": "string"}},
        ),
        public=True,
        description="The URLs of result.files: they carry their own signature instead of an API key.",
    ),
    *(
        Route(
            "post",
            path,
            operation_id,
            summary,
            "roboflow",
            {
                200: Answer(
                    "Roboflow's response body (segment routes with format binary: its NPZ of float logits)",
                    response,
                    alternatives=(("application/octet-stream", BINARY),) if "Segmentation" in response else (),
                )
            },
            errors=(400, 409, 410, 413, 415, 422, 500, 502, 504),
            parameters=({"name": "api_key", "in": "query", "required": False, "schema": {"type": "string"}},),
            body={JSON: request},
            description="Roboflow Inference's route: its request and response bodies (docs/api.md, Roboflow "
            "compatibility). The API key may also travel as the body's api_key or the api_key query parameter.",
            error_body="RoboflowErrorBody",
        )
        for path, operation_id, summary, request, response in (
            ("/sam2/embed_image", "sam2EmbedImage", "SAM2: embed an image", "Sam2Request", "EmbeddingResponse"),
            ("/sam2/segment_image", "sam2SegmentImage", "SAM2: segment", "Sam2Request", "SegmentationResponse"),
            ("/sam3/embed_image", "sam3EmbedImage", "SAM3: embed an image", "Sam2Request", "EmbeddingResponse"),
            ("/sam3/visual_segment", "sam3VisualSegment", "SAM3: segment", "Sam2Request", "SegmentationResponse"),
            (
                "/sam3/concept_segment",
                "sam3ConceptSegment",
                "SAM3: every instance",
                "ConceptRequest",
                "ConceptResponse",
            ),
        )
    ),
    Route("get", "/healthz", "healthz", "The process is up", "ops", {200: Answer("Up", "Health")}, public=True),
    Route(
        "get",
        "/readyz",
        "readyz",
        "Broker and storage reachable",
        "ops",
        {200: Answer("Ready", "Health")},
        errors=(503,),
        public=True,
    ),
    Route(
        "get",
        "/metrics",
        "metrics",
        "Prometheus metrics",
        "ops",
        {200: Answer("Prometheus text format", {"type": "string"}, media_type="text/plain")},
        errors=(503,),
        public=True,
    ),
    Route(
        "get",
        "/openapi.json",
        "openapi",
        "This document",
        "ops",
        {200: Answer("OpenAPI 3.1", {"type": "object"})},
        public=True,
    ),
)


def build_openapi(version: str, *, keys: bool = True) -> dict[str, Any]:
    """The document of a server with API keys (``keys``), or of one that runs open: no key needed, never a 401."""
    schemas, queries = _components()
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method] = _operation(route, queries, keys)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "samq", "version": version, "description": "Asynchronous Segment Anything jobs."},
        "components": {"schemas": schemas},
        "paths": paths,
    }
    if keys:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        document["security"] = [{"bearer": []}]
    else:
        document["info"]["description"] += " This server runs open (no API keys): every caller is one tenant."
    return document


def _components() -> tuple[dict[str, Schema], dict[type[BaseModel], list[Schema]]]:
    """All schemas in one pass (so shared definitions agree), and the query parameters of QUERIES."""
    named = {**REQUESTS, **documents.NAMED}  # and the result documents (tasks.documents)
    inputs: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
        *((name, "validation", TypeAdapter(model)) for name, model in named.items()),
        *((model.__name__, "serialization", TypeAdapter(model)) for model in RESPONSES),
        *((model.__name__, "validation", TypeAdapter(model)) for model in QUERIES),
    ]
    tops, defs = TypeAdapter.json_schemas(inputs, ref_template=REF)
    schemas: dict[str, Schema] = dict(defs.get("$defs", {}))
    for name in named:
        top = tops[(name, "validation")]
        if "$ref" not in top:  # a union (the job spec, a document) has no definition of its own
            schemas[name] = top
    schemas["ResultView"]["properties"]["summary"] = _schema("JobSummary")  # stored and served as it was written
    queries = {}
    for model in QUERIES:
        fields = schemas.pop(model.__name__)["properties"]
        queries[model] = [_query_parameter(name, schema) for name, schema in fields.items()]
    return schemas, queries


def _query_parameter(name: str, field: Schema) -> Schema:
    """An optional field as a query parameter: absent means None, so the ``null`` branch goes."""
    schema = {k: v for k, v in field.items() if k not in ("title", "default")}
    options = [option for option in schema.pop("anyOf", []) if option != {"type": "null"}]
    if len(options) == 1:
        schema.update(options[0])
    elif options:
        schema["anyOf"] = options
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _operation(route: Route, queries: Mapping[type[BaseModel], list[Schema]], keys: bool) -> dict[str, Any]:
    errors = set(route.errors)
    if not route.public:
        errors.update(TENANT_ERRORS, (401,) if keys else ())
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary, "tags": [route.tag]}
    if route.description:
        operation["description"] = route.description
    parameters = [*route.parameters, *(queries[route.query] if route.query else ())]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        content = {media_type: {"schema": _schema(body)} for media_type, body in route.body.items()}
        operation["requestBody"] = {"required": True, "content": content}
    operation["responses"] = {
        **{str(status): _response(answer) for status, answer in sorted(route.answers.items())},
        **{
            str(status): _response(Answer(ERRORS[status], route.error_body, headers=ERROR_HEADERS.get(status, ())))
            for status in sorted(errors)
        },
    }
    if route.public and keys:
        operation["security"] = []
    return operation


def _response(answer: Answer) -> dict[str, Any]:
    response: dict[str, Any] = {"description": answer.description}
    if answer.headers:
        response["headers"] = {name: {**HEADERS[name], "required": True} for name in answer.headers}
    if answer.body is not None:
        bodies = ((answer.media_type, answer.body), *answer.alternatives)
        response["content"] = {media_type: {"schema": _schema(body)} for media_type, body in bodies}
    return response


def _schema(body: str | Schema) -> Schema:
    return {"$ref": REF.format(model=body)} if isinstance(body, str) else body
