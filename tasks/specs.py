"""Job specs: one frozen pydantic model per job type, validated once at the API edge. This module: the shared
parts (media references, prompts, webhooks, output options) and the jobs on one image (segment, embed, concept);
``tasks.everything_specs``, ``tasks.track_specs`` and ``tasks.batch_specs`` hold the others, ``tasks.jobs.JobSpec``
is their union.

The same models validate HTTP requests, travel (as JSON) inside the job record, and generate the OpenAPI schema.
Downstream code only ever sees these typed objects, never raw dicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAX_PROMPTS_PER_JOB = 64
MAX_POINTS_PER_PROMPT = 64
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 32
MAX_CONCEPT_PROMPTS = 16
MAX_EXEMPLAR_BOXES = 16
MAX_PHRASE_CHARS = 200
"""Generous for a noun phrase; SAM3's text encoder reads 32 tokens, and CLIP's BPE averages ~4 characters a token."""
MAX_DETECTIONS = 1000
SHA256_HEX = r"^[0-9a-f]{64}$"


class Spec(BaseModel):
    """Base for every request model: immutable; unknown fields and non-finite numbers (1e999) are errors (422)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ModelId(StrEnum):
    """Models a job may name. SAM2.1 checkpoints by Meta, all four sizes."""

    SAM2_1_TINY = "sam2.1_hiera_tiny"
    SAM2_1_SMALL = "sam2.1_hiera_small"
    SAM2_1_BASE_PLUS = "sam2.1_hiera_base_plus"
    SAM2_1_LARGE = "sam2.1_hiera_large"
    SAM3 = "sam3"
    """SAM3 (Meta, 840M): the tracker model for ``segment``/``embed``, the concept model for ``concept`` and for
    ``track`` with ``concepts``."""
    SAM3_TRACKER = "sam3_tracker"
    """The SAM3 tracker on video (``track`` seeded by boxes/points); ``segment``/``embed`` call it ``sam3``."""


class UrlImage(Spec):
    url: Annotated[str, Field(pattern=r"^https?://", max_length=4096, description="http(s) URL of the media file.")]


class Base64Image(Spec):
    base64: Annotated[str, Field(min_length=1, description="The image file, base64-encoded (size-capped).")]


class UploadImage(Spec):
    upload: Annotated[str, Field(pattern=r"^upl_[0-9a-zA-Z]+$", description="Id from POST /v1/uploads.")]


class S3Image(Spec):
    s3: Annotated[str, Field(pattern=r"^s3://[a-z0-9.\-]{3,63}/.+", description="s3://bucket/key (allowed buckets).")]


class CachedImage(Spec):
    image_id: Annotated[str, Field(pattern=SHA256_HEX, description="Content hash returned by an embed job.")]


ImageRef = UrlImage | Base64Image | UploadImage | S3Image | CachedImage
MediaRef = UrlImage | UploadImage | S3Image
"""A file by reference (videos, detections files): no inline base64."""


class Point(Spec):
    x: Annotated[float, Field(ge=0)]
    y: Annotated[float, Field(ge=0)]
    positive: bool = True


class Box(Spec):
    """Absolute pixel corners of the original image, top-left origin."""

    x0: Annotated[float, Field(ge=0)]
    y0: Annotated[float, Field(ge=0)]
    x1: Annotated[float, Field(ge=0)]
    y1: Annotated[float, Field(ge=0)]

    @model_validator(mode="after")
    def _ordered(self) -> Box:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError("box needs x1 > x0 and y1 > y0")
        return self


class MaskInput(Spec):
    """Low-res logits of instance ``index`` of an earlier segment job, for iterative refinement."""

    job: Annotated[str, Field(pattern=r"^job_[0-9a-zA-Z]+$")]
    index: Annotated[int, Field(ge=0, lt=MAX_PROMPTS_PER_JOB * 3)]


MAX_LABEL_CHARS = 200


class Prompt(Spec):
    """One instance to segment: positive/negative points and/or one box, optionally a previous mask.

    ``label``, ``class_id`` and ``detection_confidence`` describe where the prompt came from (typically another
    model's detection box); the instance the prompt yields carries them, and the COCO export names its category
    after them.
    """

    model_config = ConfigDict(
        json_schema_extra={  # the rule below, for clients that validate against /openapi.json
            "anyOf": [
                {"required": ["points"], "properties": {"points": {"minItems": 1}}},
                {"required": ["box"], "properties": {"box": {"type": "object"}}},
            ]
        }
    )

    points: Annotated[list[Point], Field(default_factory=list, max_length=MAX_POINTS_PER_PROMPT)]
    box: Box | None = None
    mask_input: MaskInput | None = None
    label: Annotated[str, Field(min_length=1, max_length=MAX_LABEL_CHARS)] | None = None
    class_id: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    detection_confidence: Annotated[float, Field(ge=0, le=1)] | None = None

    @model_validator(mode="after")
    def _has_geometry(self) -> Prompt:
        if not self.points and self.box is None:
            raise ValueError("a prompt needs at least one point or a box")
        return self


MaskFormat = Literal["rle", "polygon", "png", "logits"]
"""``logits`` (segment jobs only): one file, ``logits.npz``, of the masks' float logits at image size (``masks``,
the mask is ``> 0``) and at the model's low resolution (``low_res_masks``): Roboflow's ``binary`` format."""


class OutputOptions(Spec):
    formats: Annotated[list[MaskFormat], Field(default_factory=lambda: ["rle"], min_length=1, max_length=4)]
    annotated: Annotated[
        bool,
        Field(
            description="Also write annotated.png: the image with each instance's mask, box and caption drawn on it "
            "(and a segment job's prompts). Needs the image itself, not an image_id."
        ),
    ] = False

    @field_validator("formats")
    @classmethod
    def _unique(cls, formats: list[MaskFormat]) -> list[MaskFormat]:
        if len(set(formats)) != len(formats):
            raise ValueError("formats must not repeat")
        return formats


class WebhookEvent(StrEnum):
    STARTED = "job.started"
    PROGRESS = "job.progress"
    SUCCEEDED = "job.succeeded"
    FAILED = "job.failed"
    CANCELED = "job.canceled"


TERMINAL_EVENTS = (WebhookEvent.SUCCEEDED, WebhookEvent.FAILED, WebhookEvent.CANCELED)


class Webhook(Spec):
    """Signed POSTs (Standard Webhooks) to ``url`` for the chosen events; the URL must be publicly routable."""

    url: Annotated[str, Field(pattern=r"^https?://", max_length=2048, description="http(s) URL that receives events.")]
    events: Annotated[
        list[WebhookEvent],
        Field(default_factory=lambda: list(TERMINAL_EVENTS), min_length=1, max_length=len(WebhookEvent)),
    ]

    @field_validator("events")
    @classmethod
    def _unique_events(cls, events: list[WebhookEvent]) -> list[WebhookEvent]:
        if len(set(events)) != len(events):
            raise ValueError("events must not repeat")
        return events


Metadata = Annotated[dict[str, Any], Field(default_factory=dict, description="Client JSON, echoed (≤16 KiB).")]


class JobFields(Spec):
    """What every job carries besides its work: the client's metadata and webhook."""

    metadata: Metadata
    webhook: Webhook | None = None

    @field_validator("metadata")
    @classmethod
    def _small_metadata(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        """Small, plain JSON: it is stored, echoed in every job object and sent in webhook bodies."""
        if _deeper_than(metadata, MAX_METADATA_DEPTH):
            raise ValueError(f"metadata must nest at most {MAX_METADATA_DEPTH} levels deep")
        try:  # NaN and Infinity are not JSON; a lone surrogate escape (\ud800) is not text
            size = len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode())
        except ValueError as e:
            raise ValueError(f"metadata must be plain JSON: {e}") from e
        if size > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must serialize to at most {MAX_METADATA_BYTES} bytes")
        return metadata


class ImageModel(Spec):
    """The model of a job on one image with visual prompts."""

    model: ModelId = ModelId.SAM2_1_TINY

    @field_validator("model")
    @classmethod
    def _image_model(cls, model: ModelId) -> ModelId:
        if model == ModelId.SAM3_TRACKER:
            raise ValueError("sam3_tracker names the SAM3 tracker on video; on images it is model 'sam3'")
        return model


class SegmentTemplate(ImageModel):
    """A segment job without its image: a batch applies it to many (items may bring their own prompts)."""

    type: Literal["segment"]
    prompts: Annotated[list[Prompt], Field(default_factory=list, max_length=MAX_PROMPTS_PER_JOB)]
    multimask_output: bool = True
    return_all_masks: bool = False
    output: Annotated[OutputOptions, Field(default_factory=OutputOptions)]


class SegmentSpec(SegmentTemplate, JobFields):
    """SAM2 on one image with visual prompts; each prompt yields one instance. No prompts at all yields one
    instance too: the image's most prominent object, as the model predicts with no prompt."""

    image: ImageRef

    @model_validator(mode="after")
    def _drawable(self) -> SegmentSpec:
        check_drawable(self.image, self.output)
        return self


class EmbedSpec(ImageModel, JobFields):
    """Compute and cache the image embedding so later segment jobs on the same image skip the encoder."""

    type: Literal["embed"]
    image: UrlImage | Base64Image | UploadImage | S3Image


class ExemplarBox(Box):
    """An example of the concept (``positive``) or of what it is not."""

    positive: bool = True


Phrase = Annotated[
    str, Field(min_length=1, max_length=MAX_PHRASE_CHARS, pattern=r"\S", description="A short noun phrase.")
]
Threshold = Annotated[float, Field(ge=0, le=1)]


class ConceptPrompt(Spec):
    """Find every instance of ``text`` and/or of the exemplar ``boxes``; each instance is labelled ``text``."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["text"], "properties": {"text": {"type": "string"}}},
                {"required": ["boxes"], "properties": {"boxes": {"minItems": 1}}},
            ]
        }
    )

    text: Phrase | None = None
    boxes: Annotated[list[ExemplarBox], Field(default_factory=list, max_length=MAX_EXEMPLAR_BOXES)]
    threshold: Threshold | None = None
    """Overrides the job's ``threshold`` for this prompt."""

    @model_validator(mode="after")
    def _has_something(self) -> ConceptPrompt:
        if self.text is None and not self.boxes:
            raise ValueError("a concept prompt needs a text, exemplar boxes, or both")
        return self


class ConceptTemplate(Spec):
    """A concept job without its image: a batch applies it to many (items may bring their own prompts)."""

    type: Literal["concept"]
    model: Literal[ModelId.SAM3] = ModelId.SAM3
    prompts: Annotated[list[ConceptPrompt], Field(default_factory=list, max_length=MAX_CONCEPT_PROMPTS)]
    threshold: Threshold = 0.5
    """Keep detections scoring at least this (per-prompt ``threshold`` overrides it)."""
    max_detections: Annotated[int, Field(ge=1, le=MAX_DETECTIONS)] = 100
    """Highest-scoring instances kept over the whole job, chosen before any mask is upsampled."""
    nms_iou: Annotated[float, Field(gt=0, le=1)] | None = None
    """Drop an instance whose mask overlaps a better-scoring one (any prompt) by more than this IoU."""
    output: Annotated[OutputOptions, Field(default_factory=OutputOptions)]

    @field_validator("output")
    @classmethod
    def _no_logits(cls, output: OutputOptions) -> OutputOptions:
        return without_logits(output)


class ConceptSpec(ConceptTemplate, JobFields):
    """SAM3 open-vocabulary segmentation: every instance of each phrase (or exemplar), one image encode for all."""

    image: ImageRef
    prompts: Annotated[list[ConceptPrompt], Field(min_length=1, max_length=MAX_CONCEPT_PROMPTS)]

    @model_validator(mode="after")
    def _drawable(self) -> ConceptSpec:
        check_drawable(self.image, self.output)
        return self


def without_logits(output: OutputOptions) -> OutputOptions:
    """The output options of a job other than segment: the logits format is a segment job's only."""
    if "logits" in output.formats:
        raise ValueError("logits are written for segment jobs only; use rle, polygon or png")
    return output


def check_drawable(image: ImageRef, output: OutputOptions) -> None:
    if output.annotated and isinstance(image, CachedImage):
        raise ValueError("output.annotated draws on the image itself: send the image, not an image_id")


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether ``value`` nests more than ``levels`` objects/arrays deep (walks at most ``levels + 1`` of them)."""
    if isinstance(value, dict):
        children: Iterable[Any] = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    return levels == 0 or any(_deeper_than(child, levels - 1) for child in children)


def validation_details(error: ValidationError, union_tag: str | None = None) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field": "prompts.0.box", "message", "type"}``: the one formatter of them.

    For a discriminated union (job specs), ``union_tag`` is the body's ``type``: pydantic puts it first in every
    path, and clients should see the field path inside their own body.
    """
    details = []
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        if union_tag is not None and loc[:1] == [union_tag]:
            loc = loc[1:]
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = ["type"]
        details.append({"field": ".".join(str(part) for part in loc), "message": item["msg"], "type": item["type"]})
    return details


def error_code(error: ValidationError) -> str:
    """``invalid_value`` when a rule beyond the JSON schema failed (a validator of ours: box corners in order, one
    media reference of three, …), which a client that validated its body against /openapi.json cannot have
    caught; else ``validation_error`` (a type, a bound, a pattern, a missing or unknown field). The details list
    every problem either way. (A union's members each report theirs, so one rule's failure decides.)"""
    return "invalid_value" if any(item["type"] == "value_error" for item in error.errors()) else "validation_error"


def first_problem(error: ValidationError) -> str:
    """The first problem as one line for a job error: ``field: message`` (the message alone for a whole value)."""
    first = validation_details(error)[0]
    return f"{first['field']}: {first['message']}" if first["field"] else first["message"]
