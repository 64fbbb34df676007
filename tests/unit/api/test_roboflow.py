"""The Roboflow translation on its own: request forms into native job bodies, native results into Roboflow's
shapes, and the logits cache's choice of an earlier prompt set."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import TypeAdapter, ValidationError

from api.roboflow.requests import ConceptRequest, Sam2Request, concept_body, segment_body
from api.roboflow.responses import (
    ConceptResponse,
    SegmentationResponse,
    concept_response,
    roboflow_polygons,
    segment_response,
)
from api.roboflow_memory import _match
from tasks.jobs import JobSpec
from tasks.specs import ConceptSpec, ModelId, SegmentSpec
from worker.encoders import encode_polygons

JOB = TypeAdapter(JobSpec)
IMAGE = {"type": "base64", "value": "aGVsbG8="}
POINT = {"x": 10, "y": 20, "positive": True}


@pytest.mark.parametrize(
    "prompts",
    [
        {"prompts": [{"points": [POINT]}]},  # the SDK's form
        [{"points": [POINT]}],  # a flat list
        {"points": [POINT]},  # one prompt
    ],
)
def test_every_prompt_form_is_the_same_request(prompts: Any) -> None:
    points = Sam2Request.model_validate({"image": IMAGE, "prompts": prompts}).prompts[0].points
    assert points is not None and points[0].x == 10


def test_no_prompts_in_any_form_is_an_unprompted_segment() -> None:
    bodies: list[dict[str, Any]] = [{}, {"prompts": None}, {"prompts": {"prompts": None}}, {"prompts": []}]
    for body in bodies:
        call = Sam2Request.model_validate({"image": IMAGE, **body})
        spec = JOB.validate_python(segment_body(call, ModelId.SAM2_1_TINY, call.image.media(), []))  # type: ignore[union-attr]
        assert isinstance(spec, SegmentSpec) and spec.prompts == []


def test_a_centre_box_becomes_exact_corners_and_billing_fields_are_ignored() -> None:
    call = Sam2Request.model_validate(
        {
            "image": {"type": "BASE64", "value": "data:image/png;base64,aGVsbG8="},
            "prompts": [{"box": {"x": 100.5, "y": 50, "width": 41, "height": 20.5}, "points": [POINT]}],
            "id": "0f3c",
            "source": "sdk",
            "countinference": False,
            "disable_model_monitoring": True,
            "multimask_output": False,
            "format": "rle",
        }
    )
    body = segment_body(call, ModelId.SAM2_1_LARGE, call.image.media(), [{"job": "job_a1", "index": 2}])  # type: ignore[union-attr]
    spec = JOB.validate_python(body)
    assert isinstance(spec, SegmentSpec)
    assert spec.image.model_dump() == {"base64": "aGVsbG8="}
    box = spec.prompts[0].box
    assert box is not None and (box.x0, box.y0, box.x1, box.y1) == (80.0, 39.75, 121.0, 60.25)
    assert spec.prompts[0].mask_input is not None and spec.prompts[0].mask_input.index == 2
    assert (spec.model, spec.multimask_output, spec.output.formats) == (ModelId.SAM2_1_LARGE, False, ["rle"])
    binary = call.model_copy(update={"format": "binary"})
    spec = JOB.validate_python(segment_body(binary, ModelId.SAM2_1_LARGE, binary.image.media(), [None]))  # type: ignore[union-attr]
    assert isinstance(spec, SegmentSpec) and spec.output.formats == ["logits"]  # the NPZ, written by the job


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image": {"type": "numpy", "value": "x"}}, "image.type"),
        ({"image": IMAGE, "prompts": [{"box": {"x": 1, "y": 1, "width": -2, "height": 3}}]}, "prompts.0.box.width"),
        ({"image": IMAGE, "prompts": [{"points": [{"x": "left", "y": 1}]}]}, "prompts.0.points.0.x"),
        ({"image": IMAGE, "format": "tiff"}, "format"),
        ({"image": IMAGE, "multimask_output": "maybe"}, "multimask_output"),
    ],
)
def test_fields_samq_uses_are_validated(body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Sam2Request.model_validate(body)
    assert field in {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_models_map_onto_samqs() -> None:
    def model(**fields: str) -> ModelId:
        return Sam2Request.model_validate({"image": IMAGE, **fields}).sam2_model("hiera_large")

    assert model() == ModelId.SAM2_1_LARGE
    assert model(sam2_version_id="hiera_b_plus") == ModelId.SAM2_1_BASE_PLUS
    assert model(model_id="sam2/hiera_small") == ModelId.SAM2_1_SMALL
    for fields in ({"sam2_version_id": "hiera_huge"}, {"model_id": "sam2/nope"}):
        with pytest.raises(Exception, match="unknown"):
            model(**fields)
    with pytest.raises(Exception, match="unknown model_id 'sam3/custom-7'"):
        ConceptRequest.model_validate(
            {"image": IMAGE, "prompts": [{"text": "a"}], "model_id": "sam3/custom-7"}
        ).check_sam3_model()


def test_concept_prompts_take_both_box_forms_and_labels() -> None:
    call = ConceptRequest.model_validate(
        {
            "image": IMAGE,
            "prompts": [
                {"type": "text", "text": "dog", "output_prob_thresh": 0.3},
                {
                    "type": "visual",
                    "boxes": [{"x": 10, "y": 20, "width": 30, "height": 40}, {"x0": 1, "y0": 2, "x1": 3, "y1": 4}],
                    "box_labels": [1, 0],
                },
            ],
            "output_prob_thresh": 0.25,
            "nms_iou_threshold": 0.5,
        }
    )
    spec = JOB.validate_python(concept_body(call, call.image.media(), 1000))  # type: ignore[union-attr]
    assert isinstance(spec, ConceptSpec)
    assert (spec.threshold, spec.nms_iou, spec.max_detections) == (0.25, 0.5, 1000)
    assert spec.prompts[0].text == "dog" and spec.prompts[0].threshold == 0.3
    boxes = [(b.x0, b.y0, b.x1, b.y1, b.positive) for b in spec.prompts[1].boxes]
    assert boxes == [(10, 20, 40, 60, True), (1, 2, 3, 4, False)]
    with pytest.raises(ValidationError, match="format"):  # Roboflow's answers no masks for binary here
        ConceptRequest.model_validate({"image": IMAGE, "prompts": [{"text": "a"}], "format": "binary"})
    with pytest.raises(ValidationError, match="box_labels must match"):
        ConceptRequest.model_validate({"image": IMAGE, "prompts": [{"boxes": [[1, 2, 3, 4]], "box_labels": [1, 1]}]})


def ring() -> np.ndarray:
    mask = np.zeros((40, 50), bool)
    mask[5:35, 5:45] = True
    mask[12:28, 15:35] = False  # a hole
    mask[18:22, 22:28] = True  # an island in it
    return mask


def test_polygons_with_holes_fill_back_with_opencv() -> None:
    mask = ring()
    rings = roboflow_polygons(encode_polygons(mask))
    assert all(isinstance(v, int) for r in rings for point in r for v in point)
    canvas = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(canvas, [np.array(r, np.int32) for r in rings], 1)  # by parity: the hole empty, the island full
    assert np.array_equal(canvas.astype(bool), mask)
    assert roboflow_polygons([]) == [[]]  # an empty mask, as Roboflow answers it


def test_results_take_roboflows_shapes() -> None:
    polygon = encode_polygons(ring())
    rle = {"size": [40, 50], "counts": "abc"}
    document = {
        "instances": [
            {"prompt_index": 1, "score": 0.5, "rle": rle, "polygon": polygon},
            {"prompt_index": 0, "score": 0.75, "rle": rle, "polygon": polygon},
        ]
    }
    answer = segment_response(document, "rle", 0.25)
    assert SegmentationResponse.model_validate(answer).predictions[0].confidence == 0.75  # prompt order
    assert answer["predictions"][1] == {"masks": rle, "confidence": 0.5, "format": "rle"}
    call = ConceptRequest.model_validate(
        {"image": IMAGE, "prompts": [{"text": "a"}, {"text": "b"}, {"boxes": [[1, 2, 3, 4]]}]}
    )
    concept = concept_response(document, call, "polygon", 1.0)
    ConceptResponse.model_validate(concept)
    assert [len(r["predictions"]) for r in concept["prompt_results"]] == [1, 1, 0]  # also a prompt that found none
    assert concept["prompt_results"][2]["echo"] == {"prompt_index": 2, "type": "visual", "text": None, "num_boxes": 1}
    assert concept["prompt_results"][0]["predictions"][0]["masks"] == roboflow_polygons(polygon)


def key(*points: tuple[int, int, bool], box: dict[str, int] | None = None) -> dict[str, Any]:
    return {"box": box, "points": [list(p) for p in points]}


def test_a_saved_prompt_set_matches_only_a_strict_extension() -> None:
    a, b, c = (1, 1, True), (2, 2, False), (3, 3, True)
    box = {"x0": 0, "y0": 0, "x1": 5, "y1": 5}
    assert _match([key(a)], [key(a, b)]) == [0]
    assert _match([key(a)], [key(b), key(a, c)]) == [None, 0]  # the new prompt has no logits of its own
    assert _match([key(a, b)], [key(a, b)]) is None  # the same set is never its own prior
    assert _match([key(a, box=box)], [key(a, b)]) is None  # boxes must agree
    assert _match([key(a), key(a)], [key(a, b)]) is None  # each saved prompt needs a prompt of its own
    assert _match([key(c)], [key(a, b)]) is None
