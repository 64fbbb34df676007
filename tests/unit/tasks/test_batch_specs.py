"""BatchSpec, BatchItem and item_spec: what a batch request may say, and the job each item becomes."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tasks.batch_specs import (
    MAX_BATCH_ITEMS_INLINE,
    BatchItem,
    BatchSpec,
    ItemsInputs,
    ManifestInputs,
    PrefixInputs,
    item_spec,
)
from tasks.jobs import new_job
from tasks.specs import (
    ConceptPrompt,
    ConceptSpec,
    ConceptTemplate,
    ModelId,
    Prompt,
    S3Image,
    SegmentSpec,
    SegmentTemplate,
    UploadImage,
    UrlImage,
)
from tasks.track_specs import TrackSpec, TrackTemplate

BOX = {"x0": 1, "y0": 2, "x1": 30, "y1": 40}
OTHER_BOX = {"x0": 5, "y0": 5, "x1": 9, "y1": 9}
SEGMENT = {"type": "segment", "prompts": [{"box": BOX}]}
ITEMS = {"items": [{"upload": "upl_a"}]}


def batch(template: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None, **extra: Any) -> BatchSpec:
    body = {
        "type": "batch",
        "template": SEGMENT if template is None else template,
        "inputs": ITEMS if inputs is None else inputs,
    }
    return BatchSpec.model_validate(body | extra)


def refused(match: str, build: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(ValidationError, match=match):
        build(*args, **kwargs)


# ---- inputs ---------------------------------------------------------------------------------------------------


def test_the_three_inputs_shapes() -> None:
    prefix = batch(inputs={"s3_prefix": "s3://my-bucket/photos/2024"}).inputs
    assert isinstance(prefix, PrefixInputs)
    assert prefix.bucket_and_prefix == ("my-bucket", "photos/2024")
    whole_bucket = batch(inputs={"s3_prefix": "s3://my-bucket"}).inputs
    assert isinstance(whole_bucket, PrefixInputs) and whole_bucket.bucket_and_prefix == ("my-bucket", "")

    items = batch(inputs={"items": [{"upload": "upl_a"}, {"s3": "s3://bkt/b.jpg", "name": "b"}]}).inputs
    assert isinstance(items, ItemsInputs)
    assert [i.media for i in items.items] == [UploadImage(upload="upl_a"), S3Image(s3="s3://bkt/b.jpg")]

    manifest = batch(inputs={"manifest": {"upload": "upl_manifest"}}).inputs
    assert isinstance(manifest, ManifestInputs) and manifest.manifest == UploadImage(upload="upl_manifest")


@pytest.mark.parametrize(
    "inputs",
    [
        {},
        {"s3_prefix": "s3://bkt/p", "items": [{"upload": "upl_a"}]},
        {"items": [{"upload": "upl_a"}], "manifest": {"upload": "upl_m"}},
        {"items": []},
        {"s3_prefix": "https://bkt/p"},
        {"manifest": {"base64": "aGk="}},  # a manifest is a file by reference: no inline base64
        {"folder": "/data"},
    ],
    ids=["empty", "prefix+items", "items+manifest", "no-items", "not-s3", "base64-manifest", "unknown"],
)
def test_inputs_must_be_exactly_one_valid_shape(inputs: dict[str, Any]) -> None:
    refused("inputs", batch, inputs=inputs)


def test_at_most_1000_listed_items() -> None:
    items = [{"upload": f"upl_{i}"} for i in range(MAX_BATCH_ITEMS_INLINE)]
    inputs = batch(inputs={"items": items}).inputs
    assert isinstance(inputs, ItemsInputs) and len(inputs.items) == MAX_BATCH_ITEMS_INLINE
    refused("at most 1000", batch, inputs={"items": [*items, {"upload": "upl_x"}]})


# ---- items ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "media"),
    [
        ({"url": "https://example.com/a.jpg"}, UrlImage(url="https://example.com/a.jpg")),
        ({"upload": "upl_abc"}, UploadImage(upload="upl_abc")),
        ({"s3": "s3://bkt/k/a.jpg"}, S3Image(s3="s3://bkt/k/a.jpg")),
    ],
)
def test_an_item_names_one_media(item: dict[str, Any], media: Any) -> None:
    parsed = BatchItem.model_validate(item)
    assert parsed.media == media
    assert parsed.display_name == next(iter(item.values()))
    assert BatchItem.model_validate(item | {"name": "cat.jpg"}).display_name == "cat.jpg"


@pytest.mark.parametrize(
    "item",
    [
        {},
        {"name": "only a name"},
        {"upload": "upl_a", "s3": "s3://bkt/a.jpg"},
        {"url": "https://example.com/a.jpg", "upload": "upl_a"},
        {"url": "https://example.com/a.jpg", "upload": "upl_a", "s3": "s3://bkt/a.jpg"},
    ],
    ids=["none", "name-only", "upload+s3", "url+upload", "all-three"],
)
def test_an_item_with_zero_or_several_media_is_refused(item: dict[str, Any]) -> None:
    refused("exactly one of url, upload or s3", BatchItem.model_validate, item)
    refused("exactly one of url, upload or s3", batch, inputs={"items": [{"upload": "upl_ok"}, item]})


@pytest.mark.parametrize(
    "item",
    [
        {"url": "ftp://example.com/a.jpg"},
        {"upload": "not-an-upload"},
        {"s3": "https://bkt/a.jpg"},
        {"base64": "aGk="},
        {"image_id": "0" * 64},
        {"upload": "upl_a", "image": {"upload": "upl_b"}},
        {"upload": "upl_a", "colour": "red"},
        {"upload": "upl_a", "name": ""},
    ],
    ids=["ftp-url", "bad-upload", "bad-s3", "base64", "image-id", "image", "unknown", "empty-name"],
)
def test_bad_or_unknown_item_fields_are_refused(item: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BatchItem.model_validate(item)


def test_item_prompts_parse_in_the_shape_given() -> None:
    visual = BatchItem.model_validate({"upload": "upl_a", "prompts": [{"box": BOX}]})
    assert visual.prompts is not None and isinstance(visual.prompts[0], Prompt)
    concept = BatchItem.model_validate({"upload": "upl_a", "prompts": [{"text": "cat"}]})
    assert concept.prompts is not None and isinstance(concept.prompts[0], ConceptPrompt)
    refused("prompts", BatchItem.model_validate, {"upload": "upl_a", "prompts": [{"box": BOX}, {"text": "cat"}]})


# ---- the batch as a whole -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "model"),
    [
        (SEGMENT, ModelId.SAM2_1_TINY),
        (SEGMENT | {"model": "sam2.1_hiera_large"}, ModelId.SAM2_1_LARGE),
        (SEGMENT | {"model": "sam3"}, ModelId.SAM3),
        ({"type": "concept", "prompts": [{"text": "cat"}]}, ModelId.SAM3),
        ({"type": "track", "objects": [{"id": 1, "box": BOX}]}, ModelId.SAM2_1_SMALL),
        ({"type": "track", "model": "sam3_tracker"}, ModelId.SAM3_TRACKER),
        ({"type": "track", "model": "sam3", "concepts": ["car"]}, ModelId.SAM3),
    ],
)
def test_the_batch_model_is_the_template_model(template: dict[str, Any], model: ModelId) -> None:
    spec = batch(template)
    assert spec.model == model == spec.template.model
    job = new_job(spec, "t1")
    assert (job.type, job.model) == ("batch", model.value)


@pytest.mark.parametrize(
    "template",
    [
        SEGMENT | {"model": "sam3_tracker"},  # the tracker is sam3 on images
        {"type": "concept", "model": "sam2.1_hiera_tiny"},
        {"type": "embed"},
        {"type": "batch"},
        {"prompts": [{"box": BOX}]},
    ],
    ids=["segment-sam3_tracker", "concept-sam2", "embed", "batch", "no-type"],
)
def test_templates_of_other_types_or_models_are_refused(template: dict[str, Any]) -> None:
    refused("template", batch, template)


@pytest.mark.parametrize(
    ("template", "field"),
    [
        (SEGMENT | {"image": {"upload": "upl_a"}}, "image"),
        ({"type": "concept", "image": {"s3": "s3://bkt/a.jpg"}}, "image"),
        ({"type": "track", "video": {"upload": "upl_v"}}, "video"),
        ({"type": "track", "detections": {"upload": "upl_d"}}, "detections"),
        (SEGMENT | {"metadata": {"a": 1}}, "metadata"),
        (SEGMENT | {"webhook": {"url": "https://example.com/hook"}}, "webhook"),
    ],
)
def test_a_template_names_no_media_and_no_job_fields(template: dict[str, Any], field: str) -> None:
    """Media only come through ``inputs``; metadata and webhook belong to the batch job, not to each item."""
    with pytest.raises(ValidationError) as info:
        batch(template)
    assert any(e["type"] == "extra_forbidden" and e["loc"][-1] == field for e in info.value.errors())


@pytest.mark.parametrize(
    "body",
    [
        {"images": ["upl_a"]},
        {"template": SEGMENT | {"colour": "red"}},
        {"inputs": {"items": [{"upload": "upl_a", "colour": "red"}]}},
        {"export": ["yolo"]},
        {"export": ["coco", "coco"]},
        {"max_failure_rate": 1.5},
        {"shard_size": 0},
        {"shard_size": 257},
    ],
    ids=["top-level", "template", "item", "export-yolo", "export-twice", "rate>1", "shard0", "shard257"],
)
def test_unknown_fields_and_bad_values_are_refused(body: dict[str, Any]) -> None:
    base = {"type": "batch", "template": SEGMENT, "inputs": ITEMS}
    with pytest.raises(ValidationError):
        BatchSpec.model_validate(base | body)


def test_a_batch_carries_job_fields_and_defaults() -> None:
    spec = batch(metadata={"run": 7}, webhook={"url": "https://example.com/hook"})
    assert spec.metadata == {"run": 7} and spec.webhook is not None
    assert (spec.max_failure_rate, spec.export, spec.shard_size) == (0.05, [], None)


@pytest.mark.parametrize(
    "template",
    [
        SEGMENT,
        SEGMENT | {"output": {"formats": ["polygon", "rle"]}},
        {"type": "concept", "prompts": [{"text": "cat"}], "output": {"formats": ["rle", "png"]}},
    ],
)
def test_export_coco_of_an_image_template_with_rle_masks(template: dict[str, Any]) -> None:
    assert batch(template, export=["coco"]).export == ["coco"]


def test_export_coco_is_refused_for_a_track_template() -> None:
    track = {"type": "track", "objects": [{"id": 1, "box": BOX}]}
    assert batch(track).template.type == "track"
    refused("export coco needs an image template", batch, track, export=["coco"])


@pytest.mark.parametrize(
    "template",
    [
        SEGMENT | {"output": {"formats": ["polygon"]}},
        SEGMENT | {"output": {"formats": ["png", "polygon"]}},
        {"type": "concept", "prompts": [{"text": "cat"}], "output": {"formats": ["png"]}},
    ],
)
def test_export_coco_needs_rle_in_the_template_output(template: dict[str, Any]) -> None:
    assert batch(template).export == []  # fine without the export
    refused("export coco needs rle masks", batch, template, export=["coco"])


# ---- item_spec: the job one item runs -------------------------------------------------------------------------


def test_item_spec_is_the_template_with_the_item_media() -> None:
    template = SegmentTemplate.model_validate(
        SEGMENT | {"model": "sam2.1_hiera_large", "multimask_output": False, "output": {"formats": ["polygon"]}}
    )
    spec = item_spec(template, BatchItem(s3="s3://bkt/a.jpg", name="a"))
    assert isinstance(spec, SegmentSpec)
    assert spec.image == S3Image(s3="s3://bkt/a.jpg")
    assert spec.prompts == template.prompts
    assert spec.model == ModelId.SAM2_1_LARGE and spec.multimask_output is False
    assert spec.output.formats == ["polygon"]
    assert spec.metadata == {} and spec.webhook is None
    by_url = item_spec(template, BatchItem(url="https://example.com/b.png"))
    assert isinstance(by_url, SegmentSpec) and by_url.image == UrlImage(url="https://example.com/b.png")


def test_item_prompts_replace_the_template_prompts() -> None:
    template = SegmentTemplate.model_validate(SEGMENT | {"multimask_output": False})
    item = BatchItem.model_validate(
        {
            "upload": "upl_a",
            "prompts": [{"points": [{"x": 3, "y": 4}]}, {"box": OTHER_BOX, "points": [{"x": 6, "y": 6}]}],
        }
    )
    spec = item_spec(template, item)
    assert isinstance(spec, SegmentSpec)
    assert spec.prompts == item.prompts and len(spec.prompts) == 2
    assert spec.image == UploadImage(upload="upl_a") and spec.multimask_output is False
    # The template itself is untouched: the next item still gets its prompts.
    plain = item_spec(template, BatchItem(upload="upl_b"))
    assert isinstance(plain, SegmentSpec) and plain.prompts == template.prompts


def test_item_prompts_alone_are_enough() -> None:
    spec = item_spec(
        SegmentTemplate.model_validate({"type": "segment"}),
        BatchItem.model_validate({"upload": "upl_a", "prompts": [{"box": BOX}]}),
    )
    assert isinstance(spec, SegmentSpec) and spec.prompts[0].box is not None


def test_no_prompts_anywhere_segments_the_most_prominent_object_but_finds_no_concept() -> None:
    unprompted = item_spec(SegmentTemplate.model_validate({"type": "segment"}), BatchItem(upload="upl_a"))
    assert isinstance(unprompted, SegmentSpec) and unprompted.prompts == []
    with pytest.raises(ValidationError, match="prompts"):
        item_spec(ConceptTemplate.model_validate({"type": "concept"}), BatchItem(upload="upl_a"))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("objects", [{"id": 1, "box": BOX}]),
        ("detections", {"upload": "upl_d"}),
    ],
)
def test_track_fields_on_an_image_template_fail(field: str, value: Any) -> None:
    item = BatchItem.model_validate({"upload": "upl_a", field: value})
    for template in (
        SegmentTemplate.model_validate(SEGMENT),
        ConceptTemplate.model_validate({"type": "concept", "prompts": [{"text": "x"}]}),
    ):
        with pytest.raises(ValidationError) as info:
            item_spec(template, item)
        assert any(e["type"] == "extra_forbidden" and e["loc"][-1] == field for e in info.value.errors())


def test_concept_item_prompts_for_a_concept_template() -> None:
    template = ConceptTemplate.model_validate(
        {"type": "concept", "prompts": [{"text": "cat"}], "threshold": 0.3, "max_detections": 7}
    )
    item = BatchItem.model_validate(
        {"s3": "s3://bkt/a.jpg", "prompts": [{"text": "dog", "threshold": 0.9}, {"boxes": [BOX | {"positive": False}]}]}
    )
    spec = item_spec(template, item)
    assert isinstance(spec, ConceptSpec)
    assert [p.text for p in spec.prompts] == ["dog", None]
    assert spec.prompts[0].threshold == 0.9 and spec.prompts[1].boxes[0].positive is False
    assert (spec.threshold, spec.max_detections, spec.model) == (0.3, 7, ModelId.SAM3)
    assert spec.image == S3Image(s3="s3://bkt/a.jpg")
    plain = item_spec(template, BatchItem(upload="upl_b"))
    assert isinstance(plain, ConceptSpec) and plain.prompts == template.prompts


def test_prompts_of_the_other_shape_fail() -> None:
    concept_prompts = BatchItem.model_validate({"upload": "upl_a", "prompts": [{"text": "dog"}]})
    with pytest.raises(ValidationError):
        item_spec(SegmentTemplate.model_validate(SEGMENT), concept_prompts)
    visual_prompts = BatchItem.model_validate({"upload": "upl_a", "prompts": [{"box": BOX}]})
    with pytest.raises(ValidationError):
        item_spec(ConceptTemplate.model_validate({"type": "concept", "prompts": [{"text": "cat"}]}), visual_prompts)


def test_prompts_on_a_track_template_fail() -> None:
    template = TrackTemplate.model_validate({"type": "track", "objects": [{"id": 1, "box": BOX}]})
    with pytest.raises(ValidationError):
        item_spec(template, BatchItem.model_validate({"upload": "upl_v", "prompts": [{"box": BOX}]}))


def test_a_track_item_runs_on_its_video_with_its_detections() -> None:
    template = TrackTemplate.model_validate({"type": "track", "prompt_mode": "every_n_frames", "every_n": 5})
    spec = item_spec(template, BatchItem.model_validate({"s3": "s3://bkt/v.mp4", "detections": {"upload": "upl_d"}}))
    assert isinstance(spec, TrackSpec)
    assert spec.video == S3Image(s3="s3://bkt/v.mp4")
    assert spec.detections == UploadImage(upload="upl_d")
    assert (spec.prompt_mode, spec.every_n, spec.model) == ("every_n_frames", 5, ModelId.SAM2_1_SMALL)
    # The template re-seeds from detections: an item without them cannot run.
    with pytest.raises(ValidationError, match="detections"):
        item_spec(template, BatchItem(s3="s3://bkt/w.mp4"))


def test_track_item_objects_replace_the_template_objects() -> None:
    template = TrackTemplate.model_validate(
        {"type": "track", "objects": [{"id": 1, "box": BOX}], "frames": {"start": 0, "stride": 2}}
    )
    item = BatchItem.model_validate(
        {"upload": "upl_v", "objects": [{"id": 7, "frame": 4, "points": [{"x": 1, "y": 1}]}]}
    )
    spec = item_spec(template, item)
    assert isinstance(spec, TrackSpec)
    assert [o.id for o in spec.objects] == [7] and spec.video == UploadImage(upload="upl_v")
    plain = item_spec(template, BatchItem(upload="upl_w"))
    assert isinstance(plain, TrackSpec) and plain.objects == template.objects
    # The merged spec is checked as a whole: frame 3 is skipped by the template's stride.
    with pytest.raises(ValidationError, match="stride"):
        item_spec(
            template, BatchItem.model_validate({"upload": "upl_v", "objects": [{"id": 7, "frame": 3, "box": BOX}]})
        )
    # A first-frame template without objects needs them from every item.
    with pytest.raises(ValidationError, match="objects"):
        item_spec(TrackTemplate.model_validate({"type": "track"}), BatchItem(upload="upl_v"))


def test_a_concept_track_template_takes_no_item_objects() -> None:
    template = TrackTemplate.model_validate({"type": "track", "model": "sam3", "concepts": ["car"]})
    spec = item_spec(template, BatchItem(url="https://example.com/v.mp4"))
    assert isinstance(spec, TrackSpec) and spec.concepts == ["car"]
    with pytest.raises(ValidationError, match="no objects or detections"):
        item_spec(template, BatchItem.model_validate({"upload": "upl_v", "objects": [{"id": 1, "box": BOX}]}))


def test_item_spec_of_a_stored_batch_template() -> None:
    """The job record stores the batch as JSON: a template read back from it (every default now "set") still
    merges the same way."""
    spec = batch({"type": "concept", "prompts": [{"text": "cat"}]})
    stored = BatchSpec.model_validate_json(spec.model_dump_json())
    item = BatchItem.model_validate({"upload": "upl_a", "prompts": [{"text": "dog"}]})
    merged = item_spec(stored.template, item)
    assert merged == item_spec(spec.template, item)
    assert isinstance(merged, ConceptSpec) and [p.text for p in merged.prompts] == ["dog"]
