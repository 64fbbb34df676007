"""The category table: fixed by the prompts (in prompt order, then item order), never by what matched."""

from __future__ import annotations

from typing import Any

from tasks.batch_specs import BatchItem
from tasks.specs import ConceptSpec, ConceptTemplate, SegmentSpec, SegmentTemplate
from worker.pipeline.categories import CategoryTable, batch_categories, job_categories

IMAGE = {"upload": "upl_x"}
BOX = {"x0": 1, "y0": 1, "x1": 5, "y1": 5}


def concept(prompts: list[dict[str, Any]]) -> ConceptSpec:
    return ConceptSpec.model_validate({"type": "concept", "image": IMAGE, "prompts": prompts})


def segment(prompts: list[dict[str, Any]]) -> SegmentSpec:
    return SegmentSpec.model_validate({"type": "segment", "image": IMAGE, "prompts": prompts})


def as_items(items: list[dict[str, Any]]) -> list[BatchItem]:
    return [BatchItem.model_validate({"upload": "upl_x"} | item) for item in items]


def names(table: CategoryTable) -> list[tuple[int, str]]:
    return [(entry["id"], entry["name"]) for entry in table.entries()]


def test_a_concept_job_has_a_category_per_distinct_phrase_in_prompt_order() -> None:
    spec = concept(
        [
            {"text": "red car"},
            {"text": "dog", "threshold": 1.0},
            {"boxes": [BOX]},  # exemplar-only: "object", in its place
            {"text": "red car", "boxes": [BOX]},  # the same phrase again: the same category
            {"text": "Dog"},  # case matters: phrases are the instances' labels as written
        ]
    )
    assert names(job_categories(spec)) == [(1, "red car"), (2, "dog"), (3, "object"), (4, "Dog")]


def test_a_segment_job_names_categories_after_its_prompts_labels_with_the_detectors_class_ids() -> None:
    spec = segment(
        [
            {"box": BOX},
            {"box": BOX, "label": "car", "class_id": 2},
            {"box": BOX, "label": "person", "class_id": 0},
            {"box": BOX, "label": "car", "class_id": 7},  # the first class id given for a name stays
            {"box": BOX, "label": "tree"},
        ]
    )
    assert job_categories(spec).entries() == [
        {"id": 1, "name": "object"},
        {"id": 2, "name": "car", "class_id": 2},
        {"id": 3, "name": "person", "class_id": 0},
        {"id": 4, "name": "tree"},
    ]


def test_an_unprompted_segment_job_has_the_one_default_category() -> None:
    assert job_categories(segment([])).entries() == [{"id": 1, "name": "object"}]
    labelled = segment([{"box": BOX, "label": "car"}])
    assert names(job_categories(labelled)) == [(1, "car")]  # no "object" when every prompt has a label


def test_add_finds_a_known_name_and_appends_a_new_one() -> None:
    table = job_categories(concept([{"text": "cat"}, {"text": "dog"}]))
    assert (table.add("dog"), table.add("cat"), len(table)) == (2, 1, 2)
    assert (table.add(None), table.add(""), table.add("bird")) == (3, 3, 4)
    assert names(table) == [(1, "cat"), (2, "dog"), (3, "object"), (4, "bird")]


def test_a_copy_is_independent() -> None:
    table = job_categories(concept([{"text": "cat"}]))
    copy = table.copy()
    copy.add("dog", 3)
    assert names(table) == [(1, "cat")]
    assert copy.entries() == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog", "class_id": 3}]


def test_a_batch_lists_the_templates_prompts_then_each_items_new_ones_in_item_order() -> None:
    template = ConceptTemplate.model_validate({"type": "concept", "prompts": [{"text": "car"}, {"text": "bus"}]})
    items: list[dict[str, Any]] = [
        {},  # runs the template's prompts
        {"prompts": [{"text": "person"}, {"text": "car"}]},
        {"prompts": [{"boxes": [BOX]}]},
        {"prompts": [{"text": "bike"}, {"text": "person"}]},
    ]
    table = batch_categories(template, as_items(items))
    assert names(table) == [(1, "car"), (2, "bus"), (3, "person"), (4, "object"), (5, "bike")]
    # the same prompts give the same table; the order of the items decides the order of their new names
    assert batch_categories(template, as_items(items)).entries() == table.entries()
    table = batch_categories(template, as_items(items[::-1]))
    assert names(table) == [(1, "car"), (2, "bus"), (3, "bike"), (4, "person"), (5, "object")]


def test_a_segment_batch_without_template_prompts_lists_only_what_its_items_run() -> None:
    template = SegmentTemplate.model_validate({"type": "segment"})
    labelled = BatchItem.model_validate({"upload": "upl_x", "prompts": [{"box": BOX, "label": "car", "class_id": 2}]})
    unprompted = BatchItem.model_validate({"upload": "upl_x"})
    assert batch_categories(template, [labelled, labelled]).entries() == [{"id": 1, "name": "car", "class_id": 2}]
    assert names(batch_categories(template, [labelled, unprompted])) == [(1, "car"), (2, "object")]
    assert names(batch_categories(template, [])) == []


def test_a_batch_item_with_prompts_of_the_other_kind_adds_nothing() -> None:
    """Such an item fails as invalid_item; its prompts name no category."""
    template = ConceptTemplate.model_validate({"type": "concept", "prompts": [{"text": "car"}]})
    wrong = BatchItem.model_validate({"upload": "upl_x", "prompts": [{"box": BOX, "label": "tree"}]})
    assert names(batch_categories(template, [wrong])) == [(1, "car")]
