"""Roboflow Inference's SAM2/SAM3 request bodies, as its clients send them, and their translation into samq's own
job bodies (validated by the same specs as ``POST /v1/jobs``).

The public contract is Roboflow's: the entities ``inference/core/entities/requests/sam2.py`` and ``sam3.py`` of
``roboflow/inference`` and its ``inference-sdk`` client. Fields samq does not use (``id``, ``source``,
``source_info``, ``countinference``, ``disable_model_monitoring``, …) are ignored, as Roboflow's server ignores
unknown ones; the fields samq uses are validated (422 naming the field).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.errors import ApiError, invalid
from tasks.specs import ModelId

SAM2_VERSIONS = {
    "hiera_tiny": ModelId.SAM2_1_TINY,
    "hiera_small": ModelId.SAM2_1_SMALL,
    "hiera_b_plus": ModelId.SAM2_1_BASE_PLUS,
    "hiera_large": ModelId.SAM2_1_LARGE,
}
"""Roboflow's ``sam2_version_id`` → samq's model (the SAM2.1 checkpoints of the same sizes)."""
SAM3_MODEL_IDS = ("sam3/sam3_final", "sam3/sam3_interactive")
"""One SAM3 checkpoint serves both: the concept model and the interactive (tracker) model."""
DATA_URL = re.compile(r"^data:[^,]{0,100};base64,")
MaskFormat = Literal["json", "polygon", "rle"]
SegmentFormat = Literal["json", "polygon", "rle", "binary"]
"""``binary``: Roboflow's NPZ of float logits (``masks`` at image size, ``low_res_masks``), as
``application/octet-stream``."""


class Lenient(BaseModel):
    """Roboflow's request models: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class RoboflowImage(Lenient):
    """``{"type": "base64" | "url", "value": …}`` (Roboflow's ``InferenceRequestImage``)."""

    type: Annotated[
        str, Field(description="base64 or url", json_schema_extra={"pattern": "^([Bb][Aa][Ss][Ee]64|[Uu][Rr][Ll])$"})
    ]
    value: Annotated[str, Field(min_length=1)]

    @field_validator("type")
    @classmethod
    def _known_type(cls, kind: str) -> str:
        if kind.lower() not in ("base64", "url"):
            raise ValueError(f"image type {kind!r} is not served here: send base64 or url")
        return kind.lower()

    def media(self) -> dict[str, str]:
        """samq's media reference for the image."""
        if self.type == "url":
            return {"url": self.value}
        return {"base64": DATA_URL.sub("", self.value, count=1)}


class CentreBox(Lenient):
    """Roboflow's SAM2 box: ``x``, ``y`` are its centre."""

    x: float
    y: float
    width: Annotated[float, Field(gt=0)]
    height: Annotated[float, Field(gt=0)]

    def corners(self) -> dict[str, float]:
        half_w, half_h = self.width / 2, self.height / 2
        return {"x0": self.x - half_w, "y0": self.y - half_h, "x1": self.x + half_w, "y1": self.y + half_h}


class RoboflowPoint(Lenient):
    x: float
    y: float
    positive: bool = True


class Sam2Prompt(Lenient):
    box: CentreBox | None = None
    points: list[RoboflowPoint] | None = None

    def native(self) -> dict[str, Any]:
        prompt: dict[str, Any] = {"points": [p.model_dump() for p in self.points or []]}
        if self.box is not None:
            prompt["box"] = self.box.corners()
        return prompt

    def key(self) -> dict[str, Any]:
        """The prompt as the logits cache compares it: its box and its set of points."""
        points = sorted({(p.x, p.y, p.positive) for p in self.points or []})
        return {"box": None if self.box is None else self.box.corners(), "points": [list(p) for p in points]}


class ImageRequest(Lenient):
    """What every route's body has: the image (or a remembered ``image_id``) and the API key (read by auth)."""

    image: RoboflowImage | None = None
    image_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    api_key: str | None = None
    model_id: str | None = None

    def check_sam3_model(self) -> None:
        """The SAM3 routes run the one SAM3 checkpoint; Roboflow's fine-tuned SAM3 ids are not served."""
        if self.model_id is not None and self.model_id not in SAM3_MODEL_IDS:
            raise _unknown("model_id", self.model_id, list(SAM3_MODEL_IDS))


class Sam2Request(ImageRequest):
    """``/sam2/embed_image`` and ``/sam2/segment_image``; also ``/sam3/embed_image`` and ``/sam3/visual_segment``,
    which Roboflow serves with the same request models."""

    sam2_version_id: str | None = None
    prompts: list[Sam2Prompt] = []
    multimask_output: bool = True
    format: SegmentFormat = "json"
    save_logits_to_cache: bool = False
    load_logits_from_cache: bool = False

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompt_forms(cls, value: Any) -> Any:
        """``{"prompts": [...]}`` (the SDK's form), a flat list, one prompt, or nothing."""
        if value is None:
            return []
        if isinstance(value, dict):
            return value.get("prompts") or [] if set(value) <= {"prompts"} else [value]
        return value

    def sam2_model(self, default: str) -> ModelId:
        """The model of a ``/sam2/…`` call: ``sam2_version_id``, else a ``model_id`` of ``sam2/<version>``."""
        version = self.sam2_version_id
        if version is None and self.model_id is not None:
            version = self.model_id.removeprefix("sam2/") if self.model_id.startswith("sam2/") else self.model_id
            if version not in SAM2_VERSIONS:
                raise _unknown("model_id", self.model_id, [f"sam2/{v}" for v in SAM2_VERSIONS])
        version = version or default
        if version not in SAM2_VERSIONS:
            raise _unknown("sam2_version_id", version, list(SAM2_VERSIONS))
        return SAM2_VERSIONS[version]


class CornerBox(Lenient):
    x0: float
    y0: float
    x1: float
    y1: float


class TopLeftBox(Lenient):
    """Roboflow's SAM3 exemplar box: ``x``, ``y`` are its top-left corner."""

    x: float
    y: float
    width: float
    height: float


class Sam3Prompt(Lenient):
    type: Literal["text", "visual"] | None = None
    text: str | None = None
    boxes: list[TopLeftBox | CornerBox | Annotated[list[float], Field(min_length=4, max_length=4)]] | None = None
    box_labels: list[bool | int] | None = None
    output_prob_thresh: Annotated[float, Field(ge=0, le=1)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Sam3Prompt:
        if self.type == "visual" and not self.boxes:
            raise ValueError("a visual prompt needs at least one box")
        if self.box_labels is not None and len(self.box_labels) != len(self.boxes or []):
            raise ValueError("box_labels must match boxes in length")
        return self

    def native(self) -> dict[str, Any]:
        labels = self.box_labels or [True] * len(self.boxes or [])
        boxes = [
            _corners(box) | {"positive": bool(int(label))} for box, label in zip(self.boxes or [], labels, strict=True)
        ]
        prompt: dict[str, Any] = {"text": self.text, "boxes": boxes}
        if self.output_prob_thresh is not None:
            prompt["threshold"] = self.output_prob_thresh
        return prompt

    def echo(self, index: int) -> dict[str, Any]:
        """Roboflow's echo: the type follows from the boxes, whatever the request said."""
        boxes = len(self.boxes or [])
        return {"prompt_index": index, "type": "visual" if boxes else "text", "text": self.text, "num_boxes": boxes}


class ConceptRequest(ImageRequest):
    """``/sam3/concept_segment``."""

    prompts: Annotated[list[Sam3Prompt], Field(min_length=1)]
    output_prob_thresh: Annotated[float, Field(ge=0, le=1)] = 0.5
    nms_iou_threshold: Annotated[float, Field(gt=0, le=1)] | None = None
    format: MaskFormat = "polygon"


def native_formats(mask_format: SegmentFormat) -> list[str]:
    return {"rle": ["rle"], "binary": ["logits"]}.get(mask_format, ["polygon"])


def segment_body(
    request: Sam2Request, model: ModelId, image: dict[str, str], mask_inputs: list[dict[str, Any] | None]
) -> dict[str, Any]:
    """The native ``segment`` job of a SAM2 / SAM3 visual request: one instance per prompt, the best candidate."""
    prompts = []
    for prompt, mask_input in zip(request.prompts, mask_inputs, strict=True):
        native = prompt.native()
        if mask_input is not None:
            native["mask_input"] = mask_input
        prompts.append(native)
    return {
        "type": "segment",
        "model": model.value,
        "image": image,
        "prompts": prompts,
        "multimask_output": request.multimask_output,
        "output": {"formats": native_formats(request.format)},
    }


def concept_body(request: ConceptRequest, image: dict[str, str], max_detections: int) -> dict[str, Any]:
    return {
        "type": "concept",
        "model": ModelId.SAM3.value,
        "image": image,
        "prompts": [p.native() for p in request.prompts],
        "threshold": request.output_prob_thresh,
        "nms_iou": request.nms_iou_threshold,
        "max_detections": max_detections,
        "output": {"formats": native_formats(request.format)},
    }


def _unknown(field: str, value: str, known: list[str]) -> ApiError:
    return invalid(field, f"unknown {field} {value!r}: this server runs {', '.join(known)}", code="unknown_model")


def _corners(box: TopLeftBox | CornerBox | list[float]) -> dict[str, float]:
    if isinstance(box, TopLeftBox):
        return {"x0": box.x, "y0": box.y, "x1": box.x + box.width, "y1": box.y + box.height}
    if isinstance(box, CornerBox):
        return box.model_dump()
    return dict(zip(("x0", "y0", "x1", "y1"), box, strict=True))
