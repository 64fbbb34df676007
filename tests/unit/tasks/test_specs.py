from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from tasks.errors import IllegalTransitionError
from tasks.jobs import ALLOWED, JobSpec, JobStatus, new_job
from tasks.specs import (
    MAX_METADATA_DEPTH,
    MAX_PROMPTS_PER_JOB,
    CachedImage,
    EmbedSpec,
    SegmentSpec,
    error_code,
    validation_details,
)

ADAPTER: TypeAdapter[JobSpec] = TypeAdapter(JobSpec)
IMAGE = {"upload": "upl_abc123"}


def segment(**fields: object) -> dict[str, object]:
    return {"type": "segment", "image": IMAGE, "prompts": [{"points": [{"x": 1, "y": 2}]}], **fields}


def deep(levels: int) -> list[object]:
    """``levels`` arrays inside each other (inside the metadata object, one level more)."""
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_the_type_selects_the_model_and_defaults_apply() -> None:
    spec = ADAPTER.validate_python(segment())
    assert isinstance(spec, SegmentSpec)
    assert spec.model.value == "sam2.1_hiera_tiny"
    assert spec.multimask_output is True and spec.return_all_masks is False
    assert spec.output.formats == ["rle"]
    assert spec.prompts[0].points[0].positive is True
    assert isinstance(ADAPTER.validate_python({"type": "embed", "image": IMAGE}), EmbedSpec)
    assert isinstance(ADAPTER.validate_python(segment(image={"image_id": "a" * 64})).image, CachedImage)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (segment(extra=1), "extra"),
        (segment(model="sam2.1_hiera_huge"), "model"),
        (segment(prompts=[{"points": [], "label": ""}]), "prompts.0.label"),
        (
            {"type": "concept", "image": IMAGE, "prompts": [{"text": "a"}], "output": {"formats": ["logits"]}},
            "output",
        ),
        (segment(prompts=[{"box": {"x0": 0, "y0": 0, "x1": 5, "y1": 9}, "detection_confidence": 1.5}]), "prompts.0"),
        (segment(prompts=[{"points": [{"x": 1, "y": 2}]}] * (MAX_PROMPTS_PER_JOB + 1)), "prompts"),
        (segment(prompts=[{"points": []}]), "prompts.0"),
        (segment(prompts=[{"box": {"x0": 5, "y0": 5, "x1": 5, "y1": 9}}]), "prompts.0.box"),
        (segment(prompts=[{"points": [{"x": 1, "y": -2}]}]), "prompts.0.points.0.y"),
        (segment(prompts=[{"points": [{"x": float("inf"), "y": 2}]}]), "prompts.0.points.0.x"),
        (segment(prompts=[{"box": {"x0": 0, "y0": 0, "x1": float("nan"), "y1": 9}}]), "prompts.0.box.x1"),
        (segment(output={"formats": ["rle", "rle"]}), "output.formats"),
        (segment(output={"formats": ["svg"]}), "output.formats.0"),
        (segment(image={"image_id": "not-a-hash"}), "image.CachedImage.image_id"),
        (segment(metadata={"blob": "x" * 20_000}), "metadata"),
        (segment(metadata={"a": float("nan")}), "metadata"),
        (segment(metadata={"a": [float("inf")]}), "metadata"),
        (segment(metadata={"a": "\udc00"}), "metadata"),
        (segment(metadata={"\ud800": 1}), "metadata"),
        (segment(metadata={"a": deep(MAX_METADATA_DEPTH)}), "metadata"),
        ({"type": "embed", "image": {"image_id": "a" * 64}}, "image"),
        ({"type": "nope"}, "type"),
    ],
)
def test_invalid_bodies_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ADAPTER.validate_python(body)
    fields = [d["field"] for d in validation_details(caught.value, str(body.get("type")))]
    assert any(f == field or f.startswith(field + ".") for f in fields), fields


def test_metadata_may_nest_up_to_the_limit_and_hold_any_text() -> None:
    spec = ADAPTER.validate_python(segment(metadata={"a": deep(MAX_METADATA_DEPTH - 1), "ü": "日本"}))
    assert spec.metadata["ü"] == "日本"


def test_specs_are_immutable() -> None:
    spec = ADAPTER.validate_python(segment())
    with pytest.raises(ValidationError):
        spec.model = "x"  # type: ignore[misc,assignment]


def test_terminal_states_have_no_way_out() -> None:
    for status in JobStatus:
        assert (ALLOWED[status] == frozenset()) == status.is_terminal
    job = new_job(ADAPTER.validate_python(segment()), "t")
    job.status = JobStatus.SUCCEEDED
    with pytest.raises(IllegalTransitionError):
        job.transition(JobStatus.RUNNING)
    assert job.id.startswith("job_") and len(job.id) == 28


def test_annotated_is_off_by_default_and_needs_the_image_itself() -> None:
    assert ADAPTER.validate_python(segment()).output.annotated is False  # type: ignore[union-attr]
    assert ADAPTER.validate_python(segment(output={"annotated": True})).output.annotated is True  # type: ignore[union-attr]
    concept = {"type": "concept", "image": IMAGE, "prompts": [{"text": "a"}], "output": {"annotated": True}}
    assert ADAPTER.validate_python(concept).output.annotated is True  # type: ignore[union-attr]
    for body in (segment(image={"image_id": "a" * 64}), {**concept, "image": {"image_id": "a" * 64}}):
        with pytest.raises(ValidationError, match="send the image, not an image_id") as caught:
            ADAPTER.validate_python(body | {"output": {"annotated": True}})
        assert error_code(caught.value) == "invalid_value"
    assert ADAPTER.validate_python(segment(image={"image_id": "a" * 64}, output={"annotated": False}))
