"""Schemathesis against the real API over HTTP: no 5xx, and every answer is one that /openapi.json declares.

The document is loaded from the running server (``local_stack``: ``samq api``, a worker, Redis), so what is tested
is what clients download. Every operation gets a bounded, derandomized run of positive (schema-valid) and negative
(schema-violating) requests; in the positive run, operations that take a job id or a file key also get real ones, so
that their 2xx and 409 answers are checked too.

schemathesis' own pytest integration (``schemathesis.pytest.from_fixture``) does not run under pytest 9 (it writes
``Item._nodeid``), so the cases come from ``APIOperation.as_strategy`` under Hypothesis' ``@given`` instead.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)

from api.openapi import build_openapi
from api.views import ErrorBody
from samq.errors import ApiError
from samq.jobs import TERMINAL
from tests.support.images import b64, png_bytes, scene
from tests.support.stack import Stack

MAX_EXAMPLES = int(os.environ.get("SAMQ_FUZZ_EXAMPLES", "25"))
"""Per operation and generation mode: a few hundred requests in all, about 20 s. The long run (README,
Development): ``SAMQ_FUZZ_EXAMPLES=1000 SAMQ_FUZZ_SEED=1`` and again with ``SAMQ_FUZZ_SEED=2``."""
FUZZ_SEED = os.environ.get("SAMQ_FUZZ_SEED")
"""A seed makes the run random from that seed; without one, each case's examples are derived from its name."""
BEYOND_THE_SCHEMA = {
    "invalid_value",
    "unknown_upload",
    "unknown_job",
    "unknown_image_id",
    "unknown_model",
    "bucket_not_readable",
    "prompt_out_of_bounds",
    "invalid_base64",
    "invalid_item",
    "image_required",
    "image_too_large",
    "url_refused",
    "media_not_found",
    "idempotency_key_reused",
    "invalid_image",
    "unsupported_media_type",
    "media_too_large",
}
"""The codes of what a JSON schema cannot say (an id that does not exist, a point outside an image the server has
not read yet, bytes that are not base64 or not an image, box corners out of order): a schema-valid request may get
one of these (422; 400 or 413 for an image a Roboflow route's job could not load, as Roboflow answers), never
``validation_error``."""


def schema_valid_requests_are_accepted(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """schemathesis' positive_data_acceptance, except for the refusals of BEYOND_THE_SCHEMA."""
    if response.status_code in (400, 413, 422):
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if code in BEYOND_THE_SCHEMA:
            return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    schema_valid_requests_are_accepted,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    ignored_auth,
    use_after_free,
    ensure_resource_availability,
]
"""Every check schemathesis has (its positive-data acceptance as above), but object_level_authorization: one
tenant here (tests/integration/test_tenants.py probes every route across tenants)."""
HYPOTHESIS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=FUZZ_SEED is None,
    database=None,  # nothing written under .hypothesis/
    deadline=None,  # a real server's latency is not the property under test
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
DOCUMENT = build_openapi("local")
OPERATIONS = sorted(
    f"{method.upper()} {path}"
    for path, item in DOCUMENT["paths"].items()
    for method in item
    if path != "/openapi.json"  # schemathesis never fuzzes the document it loaded (loading it is the test)
)
CASES = [
    pytest.param(label, mode, id=f"{label}-{mode}")
    for label in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # negative data needs an input to get wrong: operations without parameters or body get positive cases only
    if mode is GenerationMode.POSITIVE
    or any(
        k in DOCUMENT["paths"][label.split(" ", 1)[1]][label.split(" ", 1)[0].lower()]
        for k in ("parameters", "requestBody")
    )
]

Inputs = dict[str, dict[str, Any]]
"""Fixed request parts by location (``path_parameters``, ``query``), as ``APIOperation.as_strategy`` takes them."""


@pytest.fixture(scope="module", autouse=True)
def _hypothesis_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Hypothesis caches what it reads from test modules under ./.hypothesis, database or not: not in the repo."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


@pytest.fixture(scope="module")
def api_schema(local_stack: Stack) -> Iterator[schemathesis.BaseSchema]:
    yield schemathesis.openapi.from_url(f"{local_stack.api_url}/openapi.json", config=schemathesis.Config())
    _cancel_unfinished(local_stack)


@pytest.fixture(scope="module")
def known_inputs(local_stack: Stack) -> dict[str, Inputs]:
    """Real values for parameters the fuzzer cannot guess, by parameter name: a succeeded job, and its result file."""
    job = local_stack.client.submit(
        {"type": "segment", "image": {"base64": b64(png_bytes(scene()))}, "prompts": [{"points": [{"x": 9, "y": 9}]}]},
        wait=60,
    )
    assert job["status"] == "succeeded", job
    url = urlsplit(job["result"]["url"])
    signed = {name: values[0] for name, values in parse_qs(url.query).items()}
    return {
        "job_id": {"path_parameters": {"job_id": job["id"]}},
        "key": {"path_parameters": {"key": unquote(url.path.removeprefix("/v1/files/"))}, "query": signed},
    }


def test_the_served_document_describes_every_route(api_schema: schemathesis.BaseSchema) -> None:
    assert sorted(result.ok().label for result in api_schema.get_all_operations()) == OPERATIONS  # type: ignore[union-attr]


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_every_answer_conforms_to_the_document(
    api_schema: schemathesis.BaseSchema, known_inputs: dict[str, Inputs], label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None
    strategies = [operation.as_strategy(mode)]
    if mode is GenerationMode.POSITIVE:
        for parameter in operation.path_parameters:
            if parameter.name in known_inputs:
                strategies.append(operation.as_strategy(mode, **known_inputs[parameter.name]))  # type: ignore[arg-type]

    @HYPOTHESIS
    @seed(int(FUZZ_SEED or 0))
    @given(case=st.one_of(strategies))
    def check(case: schemathesis.Case) -> None:
        if case.headers and "Prefer" in case.headers:
            case.headers["Prefer"] = "wait=1"  # wait=N holds a request up to a minute: keep the header, cap N
        case.call_and_validate(checks=CHECKS, timeout=30)

    check()


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 400, None),
        (b'{"type":"segment","image":{"upload":"upl_x"},"prompts":[{"points":[{"x":1e999,"y":1}]}]}', 422,
         "prompts.0.points.0.x"),
        (b'{"type":"embed","image":{"upload":"upl_x"},"metadata":{"a":NaN}}', 422, "metadata"),
        (b'{"type":"embed","image":{"upload":"upl_x"},"metadata":{"a":"\\udc00"}}', 422, "metadata"),
        (b'{"type":"embed","image":{"upload":"upl_x"},"metadata":{"a":' + b"[" * 500 + b"]" * 500 + b"}}", 422,
         "metadata"),
        (b'{"type":"embed","image":{"base64":"\\u00e9t\\u00e9"}}', 422, "image.base64"),
    ],
    ids=["deep-body", "infinite-number", "nan-metadata", "lone-surrogate", "deep-metadata", "non-ascii-base64"],
)  # fmt: skip
def test_json_the_fuzzer_does_not_write_is_a_client_error(
    local_stack: Stack, body: bytes, status: int, field: str | None
) -> None:
    """Found by hand next to the fuzzer: each of these was a 500, or a 202 for a job that could not be read back."""
    request = urllib.request.Request(
        f"{local_stack.api_url}/v1/jobs", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == status
    error = ErrorBody.model_validate_json(caught.value.read()).error
    if field is not None:
        assert field in [detail["field"] for detail in error.details], error


def _cancel_unfinished(stack: Stack) -> None:
    """Jobs the fuzzer created must not keep the shared worker busy for the tests that come after."""
    for status in ("queued", "running"):
        for job in stack.client.request("GET", f"/v1/jobs?status={status}&limit=100")["data"]:
            if job["status"] not in TERMINAL:
                try:
                    stack.client.request("POST", f"/v1/jobs/{job['id']}/cancel")
                except ApiError:  # it finished meanwhile (409)
                    continue
