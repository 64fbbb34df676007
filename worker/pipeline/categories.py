"""The category table of a segment or concept job, or of a batch: fixed by the prompts, never by what matched.

One category per distinct name, in prompt order, ids 1..N (COCO's ``category_id``; supervision's ``class_id`` is
the 0-based position). A concept prompt's name is its ``text``; a segment prompt's, its ``label``; a prompt without
one (exemplar-only, unlabelled) and a segment job without prompts name :data:`DEFAULT_CATEGORY`. A segment prompt's
``class_id`` (the detector's) is kept on its category, the first one given for that name.

A batch's table: the template's prompts first, then, item by item in the order the items are listed, the new names
of the prompts each item runs with (its own, else the template's). Two jobs or batches with the same prompts have the
same table, also when some phrase matched nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tasks.batch_specs import BatchItem
from tasks.everything_specs import EverythingTemplate
from tasks.specs import ConceptPrompt, ConceptTemplate, Prompt, SegmentTemplate

DEFAULT_CATEGORY = "object"
"""The category of an instance without a name: an unlabelled segment prompt, an exemplar-only concept prompt."""

Template = SegmentTemplate | ConceptTemplate
"""A segment or concept job's spec (a job's, or a batch's template)."""


class CategoryTable:
    """Category names in a fixed order, each with an id (1, 2, ...) and, where a prompt gave one, a ``class_id``."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._class_ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, label: str | None, class_id: int | None = None) -> int:
        """The id of ``label``'s category (``object`` for none or ``""``), appended if new."""
        name = label or DEFAULT_CATEGORY
        category_id = self._ids.setdefault(name, len(self._ids) + 1)
        if class_id is not None:
            self._class_ids.setdefault(name, class_id)
        return category_id

    def add_prompts(self, template: Template, prompts: Sequence[Prompt] | Sequence[ConceptPrompt]) -> None:
        """The categories of a job of ``template``'s type that runs ``prompts`` (prompts of the other type are
        skipped: such a job is invalid)."""
        if isinstance(template, ConceptTemplate):
            for prompt in prompts:
                if isinstance(prompt, ConceptPrompt):
                    self.add(prompt.text)
            return
        if not prompts:  # the unprompted instance
            self.add(None)
        for prompt in prompts:
            if isinstance(prompt, Prompt):
                self.add(prompt.label, prompt.class_id)

    def copy(self) -> CategoryTable:
        table = CategoryTable()
        table._ids, table._class_ids = dict(self._ids), dict(self._class_ids)
        return table

    def entries(self) -> list[dict[str, Any]]:
        """``[{"id": 1, "name": "car"}, ...]`` in id order, with ``class_id`` where one was given."""
        return [
            {"id": i, "name": name} | ({"class_id": self._class_ids[name]} if name in self._class_ids else {})
            for name, i in self._ids.items()
        ]


def job_categories(spec: Template) -> CategoryTable:
    """The table of a single segment or concept job."""
    table = CategoryTable()
    table.add_prompts(spec, spec.prompts)
    return table


def batch_categories(template: Template | EverythingTemplate, items: Iterable[BatchItem]) -> CategoryTable:
    """The table of a batch: the template's prompts (if any), then each item's, in order; an everything batch's
    one category (every mask is an ``object``)."""
    table = CategoryTable()
    if isinstance(template, EverythingTemplate):
        table.add(None)
        return table
    if template.prompts:
        table.add_prompts(template, template.prompts)
    for item in items:
        table.add_prompts(template, item.prompts if item.prompts is not None else template.prompts)
    return table
