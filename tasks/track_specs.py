"""The ``track`` job spec: objects followed through a video (see ``tasks.specs`` for the shared parts)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tasks.specs import (
    MAX_PHRASE_CHARS,
    MAX_POINTS_PER_PROMPT,
    Box,
    JobFields,
    MediaRef,
    ModelId,
    Phrase,
    Point,
    Spec,
)

MAX_TRACK_OBJECTS = 64
MAX_CONCEPTS = 16
PromptMode = Literal["first_frame", "every_n_frames", "every_frame"]


class TrackObject(Spec):
    """An object to follow, seeded on ``frame`` (the video's frame number) by a box, points, or both."""

    id: Annotated[int, Field(ge=0, lt=2**31, description="Your id for the object; tracks.jsonl reports it.")]
    label: Annotated[str, Field(min_length=1, max_length=MAX_PHRASE_CHARS)] | None = None
    frame: Annotated[int, Field(ge=0)] = 0
    box: Box | None = None
    points: Annotated[list[Point], Field(default_factory=list, max_length=MAX_POINTS_PER_PROMPT)]

    @model_validator(mode="after")
    def _has_geometry(self) -> TrackObject:
        if not self.points and self.box is None:
            raise ValueError("an object needs a box, points, or both")
        return self


class FrameRange(Spec):
    """Which frames to process: ``start`` … ``end`` (inclusive; ``null`` = the last), every ``stride``-th."""

    start: Annotated[int, Field(ge=0)] = 0
    end: Annotated[int, Field(ge=0)] | None = None
    stride: Annotated[int, Field(ge=1, le=10_000)] = 1

    @model_validator(mode="after")
    def _ordered(self) -> FrameRange:
        if self.end is not None and self.end < self.start:
            raise ValueError("frames.end must be at least frames.start")
        return self


class TrackOutput(Spec):
    formats: Annotated[
        list[Literal["rle", "polygon"]], Field(default_factory=lambda: ["rle"], min_length=1, max_length=2)
    ]
    preview: bool = False
    """Also render ``preview.mp4``: the processed frames with coloured masks and ids."""

    @field_validator("formats")
    @classmethod
    def _unique(cls, formats: list[str]) -> list[str]:
        if len(set(formats)) != len(formats):
            raise ValueError("formats must not repeat")
        return formats


class TrackTemplate(Spec):
    """A track job without its video: a batch applies it to many (items may bring their own objects and
    detections)."""

    type: Literal["track"]
    model: ModelId = ModelId.SAM2_1_SMALL
    objects: Annotated[list[TrackObject], Field(default_factory=list, max_length=MAX_TRACK_OBJECTS)]
    concepts: Annotated[list[Phrase], Field(default_factory=list, max_length=MAX_CONCEPTS)]
    prompt_mode: PromptMode = "first_frame"
    every_n: Annotated[int, Field(ge=1, le=100_000)] = 10
    """``every_n_frames``: re-seed from the detections on every n-th processed frame."""
    frames: Annotated[FrameRange, Field(default_factory=FrameRange)]
    max_fps: Annotated[float, Field(gt=0, le=1000)] | None = None
    """Process at most this many frames per second of video (by timestamps: variable frame rate is fine)."""
    output: Annotated[TrackOutput, Field(default_factory=TrackOutput)]


class TrackSpec(TrackTemplate, JobFields):
    """Video object tracking: seeded objects (SAM2, ``sam3_tracker``) or every instance of text concepts (``sam3``)."""

    video: MediaRef
    detections: MediaRef | None = None
    """JSONL, one line per frame: ``{"frame": i, "boxes": [{"x0", "y0", "x1", "y1", "label", "score"}]}``."""

    @model_validator(mode="after")
    def _consistent(self) -> TrackSpec:
        ids = [o.id for o in self.objects]
        if len(set(ids)) != len(ids):
            raise ValueError("objects: ids must be unique")
        if self.model == ModelId.SAM3:
            if not self.concepts:
                raise ValueError("model sam3 tracks text concepts: give concepts (or use sam3_tracker for objects)")
            if self.objects or self.detections is not None or self.prompt_mode != "first_frame":
                raise ValueError("model sam3 finds every instance of the concepts itself: no objects or detections")
            return self
        if self.concepts:
            raise ValueError(f"concepts need model sam3; {self.model.value} tracks seeded objects")
        if self.prompt_mode == "first_frame":
            if not self.objects:
                raise ValueError("objects: give at least one object to track (or re-seed from detections)")
            if self.detections is not None:
                raise ValueError("detections are read only when prompt_mode is every_n_frames or every_frame")
        elif self.detections is None:
            raise ValueError(f"prompt_mode {self.prompt_mode} re-seeds from a detections file: give detections")
        window = self.frames
        for i, obj in enumerate(self.objects):
            if obj.frame < window.start or (window.end is not None and obj.frame > window.end):
                raise ValueError(f"objects[{i}].frame {obj.frame} is outside the frames range")
            if (obj.frame - window.start) % window.stride:
                raise ValueError(f"objects[{i}].frame {obj.frame} is skipped by frames.stride {window.stride}")
        return self
