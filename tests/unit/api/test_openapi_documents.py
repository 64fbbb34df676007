"""tasks.documents in /openapi.json: every document model is a component with its own schema, the result routes
answer the documents' unions, the job object's summary is JobSummary, and a summary of each job type is one branch
only (a client can tell which by its fields)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from tasks import documents
from tasks.documents import Document, SegmentInstance
from tests.unit.api.test_openapi import JSON, make_app, operations, served

REF = "#/components/schemas/{model}"
IMAGE_ID = "0" * 64
SUMMARIES: dict[str, dict[str, Any]] = {
    "SegmentJobSummary": {
        "instances": 2,
        "image_id": IMAGE_ID,
        "embedding": "miss",
        "timings": {"model_ms": 1.0, "total_ms": 2.0},
        "instances_per_label": {"car": 2},
    },
    "ConceptJobSummary": {
        "instances": 2,
        "instances_per_prompt": [2, 0],
        "image_id": IMAGE_ID,
        "embedding": "memory",
        "timings": {"encode_ms": 1.0, "detect_ms": 1.0, "model_ms": 2.0, "total_ms": 3.0},
    },
    "EverythingJobSummary": {
        "instances": 3,
        "candidates_upsampled": 40,
        "image_id": IMAGE_ID,
        "embedding": "memory",
        "timings": {"encode_ms": 0.0, "generate_ms": 900.0, "model_ms": 900.0, "total_ms": 950.0},
    },
    "EmbedJobSummary": {"image_id": IMAGE_ID, "embedding": "shared"},
    "TrackJobSummary": {"frames": 12, "objects_tracked": 2, "partial": False},
    "BatchJobSummary": {
        "total": 2,
        "succeeded": 1,
        "failed": 1,
        "not_run": 0,
        "failure_codes": {"invalid_image": 1},
        "failures": [
            {"index": 1, "name": "b.png", "input": {"upload": "upl_1"}, "error": {"code": "x", "message": "y"}}
        ],
        "exports": {},
    },
}


def document_models() -> list[type[Document]]:
    """Every model of tasks.documents but the private bases."""
    found, pending = [], list(Document.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if not model.__name__.startswith("_"):
            found.append(model)
    return found


def definition(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "$defs"}


def ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


def test_every_document_model_and_union_is_a_component_with_its_schema(tmp_path: Path) -> None:
    schemas = served(make_app(tmp_path))["components"]["schemas"]
    models = document_models()
    assert {"SegmentResult", "EmbedResult", "TrackFrame", "BatchResult", *SUMMARIES} <= {m.__name__ for m in models}
    for model in models:
        assert schemas[model.__name__] == definition(model.model_json_schema(ref_template=REF)), model.__name__
    for name, union in documents.NAMED.items():
        assert schemas[name] == definition(TypeAdapter(union).json_schema(ref_template=REF)), name


def test_the_result_routes_answer_the_documents_and_the_summary_is_typed(tmp_path: Path) -> None:
    document = served(make_app(tmp_path))
    answers = {
        path: operations(document)[("get", path)]["responses"]["200"]["content"][JSON]["schema"]
        for path in ("/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/items/{index}")
    }
    assert answers == {
        "/v1/jobs/{job_id}/result": ref("ResultDocument"),
        "/v1/jobs/{job_id}/items/{index}": ref("ItemDocument"),
    }
    schemas = document["components"]["schemas"]
    assert schemas["ResultDocument"]["anyOf"] == [
        ref(name)
        for name in ("SegmentResult", "ConceptResult", "EverythingResult", "EmbedResult", "TrackSummary", "BatchResult")
    ]
    assert schemas["ItemDocument"]["anyOf"] == [
        ref(name) for name in ("SegmentResult", "ConceptResult", "EverythingResult", "TrackSummary")
    ]
    assert schemas["ResultView"]["properties"]["summary"] == ref("JobSummary")
    assert schemas["JobSummary"]["anyOf"] == [ref(name) for name in SUMMARIES]
    assert schemas["BatchItemLine"]["discriminator"]["propertyName"] == "status"


@pytest.mark.parametrize("name", SUMMARIES)
def test_a_summary_is_one_branch_of_job_summary_only(name: str) -> None:
    matches = []
    for model in (getattr(documents, branch) for branch in SUMMARIES):
        try:
            model.model_validate(SUMMARIES[name])
        except ValidationError:
            continue
        matches.append(model.__name__)
    assert matches == [name]


def test_an_omittable_field_is_absent_never_null(tmp_path: Path) -> None:
    instance = {"index": 0, "score": 0.5, "bbox": {"x0": 0, "y0": 0, "x1": 1, "y1": 1}, "area": 1, "category_id": 1}
    instance["prompt_index"] = 0
    assert SegmentInstance.model_validate(instance).png is None
    with pytest.raises(ValidationError, match="png"):
        SegmentInstance.model_validate({**instance, "png": None})
    png = served(make_app(tmp_path))["components"]["schemas"]["SegmentInstance"]["properties"]["png"]
    assert png["type"] == "string" and "default" not in png and "anyOf" not in png
