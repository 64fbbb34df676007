"""The ``batch`` job spec: one segment, concept, everything or track template over many inputs, and the job each item
runs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, model_validator

from tasks.everything_specs import EverythingSpec, EverythingTemplate
from tasks.specs import (
    MAX_PROMPTS_PER_JOB,
    ConceptPrompt,
    ConceptSpec,
    ConceptTemplate,
    JobFields,
    MediaRef,
    ModelId,
    Prompt,
    S3Image,
    SegmentSpec,
    SegmentTemplate,
    Spec,
    UploadImage,
    UrlImage,
)
from tasks.track_specs import MAX_TRACK_OBJECTS, TrackObject, TrackSpec, TrackTemplate

MAX_BATCH_ITEMS_INLINE = 1000
"""Items listed in the request itself; more go in an uploaded manifest (``inputs.manifest``)."""
MAX_SHARD_SIZE = 256


class BatchItem(Spec):
    """One input of a batch: exactly one media reference (``url``, ``upload`` or ``s3``), an optional name (the
    COCO ``file_name``), and optionally its own prompts (segment, concept) or objects and detections (track)."""

    url: Annotated[str, Field(pattern=r"^https?://", max_length=4096)] | None = None
    upload: Annotated[str, Field(pattern=r"^upl_[0-9a-zA-Z]+$")] | None = None
    s3: Annotated[str, Field(pattern=r"^s3://[a-z0-9.\-]{3,63}/.+")] | None = None
    name: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    prompts: Annotated[list[Prompt] | list[ConceptPrompt], Field(max_length=MAX_PROMPTS_PER_JOB)] | None = None
    objects: Annotated[list[TrackObject], Field(max_length=MAX_TRACK_OBJECTS)] | None = None
    detections: MediaRef | None = None

    @model_validator(mode="after")
    def _one_media(self) -> BatchItem:
        if sum(ref is not None for ref in (self.url, self.upload, self.s3)) != 1:
            raise ValueError("an item needs exactly one of url, upload or s3")
        return self

    @property
    def media(self) -> MediaRef:
        if self.upload is not None:
            return UploadImage(upload=self.upload)
        if self.s3 is not None:
            return S3Image(s3=self.s3)
        assert self.url is not None
        return UrlImage(url=self.url)

    @property
    def display_name(self) -> str:
        """``name``, else the reference itself."""
        return self.name or self.upload or self.s3 or self.url or ""


class PrefixInputs(Spec):
    s3_prefix: Annotated[
        str,
        Field(
            pattern=r"^s3://[a-z0-9.\-]{3,63}(/.*)?$",
            max_length=1024,
            description="Every image (video, for track) under this prefix of a bucket the server reads.",
        ),
    ]

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        bucket, _, prefix = self.s3_prefix.removeprefix("s3://").partition("/")
        return bucket, prefix


class ItemsInputs(Spec):
    items: Annotated[list[BatchItem], Field(min_length=1, max_length=MAX_BATCH_ITEMS_INLINE)]


class ManifestInputs(Spec):
    manifest: Annotated[MediaRef, Field(description="JSONL, one item (as in inputs.items) per line.")]


Template = Annotated[
    SegmentTemplate | ConceptTemplate | EverythingTemplate | TrackTemplate, Field(discriminator="type")
]
ItemSpec = Annotated[SegmentSpec | ConceptSpec | EverythingSpec | TrackSpec, Field(discriminator="type")]
_ITEM_SPEC: TypeAdapter[SegmentSpec | ConceptSpec | EverythingSpec | TrackSpec] = TypeAdapter(ItemSpec)


class BatchSpec(JobFields):
    """One segment, concept, everything or track template applied to many inputs; items run on the ``bulk`` queue."""

    type: Literal["batch"]
    template: Template
    inputs: PrefixInputs | ItemsInputs | ManifestInputs
    max_failure_rate: Annotated[float, Field(ge=0, le=1)] = 0.05
    """The batch fails (``failure_rate_exceeded``) once more than this fraction of its items failed."""
    export: Annotated[list[Literal["coco"]], Field(default_factory=list, max_length=1)]
    shard_size: Annotated[int, Field(ge=1, le=MAX_SHARD_SIZE)] | None = None
    """Items per shard (one task on the ``bulk`` queue); default 16 images or 1 video."""

    @property
    def model(self) -> ModelId:
        return self.template.model

    @model_validator(mode="after")
    def _consistent(self) -> BatchSpec:
        if self.export and self.template.type == "track":
            raise ValueError("export coco needs an image template (track results are per video)")
        if self.export and "rle" not in self.template.output.formats:
            raise ValueError("export coco needs rle masks: keep 'rle' in template.output.formats")
        return self


def item_spec(
    template: SegmentTemplate | ConceptTemplate | EverythingTemplate | TrackTemplate, item: BatchItem
) -> SegmentSpec | ConceptSpec | EverythingSpec | TrackSpec:
    """The job one item runs: the template, the item's media, and what the item overrides. Raises pydantic's
    ValidationError (e.g. no prompts anywhere, or track objects given to an image template)."""
    media = "video" if template.type == "track" else "image"
    data = template.model_dump(exclude_unset=True) | {media: item.media.model_dump()}
    for name in ("prompts", "objects", "detections"):
        value = getattr(item, name)
        if value is not None:
            data[name] = value.model_dump() if isinstance(value, BaseModel) else [v.model_dump() for v in value]
    return _ITEM_SPEC.validate_python(data)
