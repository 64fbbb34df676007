"""A streaming writer of COCO instances files from samq result-document instances."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from worker.pipeline.categories import DEFAULT_CATEGORY, CategoryTable


@dataclass(frozen=True)
class CocoStats:
    """What a closed :class:`CocoWriter` wrote."""

    images: int
    annotations: int
    categories: int


class CocoWriter:
    """Writes a COCO instances file (images, categories, annotations) to a local path without holding every
    annotation in memory: images and annotations go to temporary files, joined on close.

    ``categories`` (``worker.pipeline.categories``) is the category table, written whole, also its categories that
    no annotation has; an instance's ``label`` names its category (none: ``object``), and a label the table lacks
    is appended to it.

    The temporary files sit beside ``path``; the final file replaces ``path`` in one rename, so a reader never sees
    a partial one. Used as a context manager, it closes on success and removes its temporary files on an exception.
    """

    def __init__(self, path: Path, categories: CategoryTable | None = None) -> None:
        self._path = path
        self._categories = categories.copy() if categories is not None else CategoryTable()
        self._images = _temporary(path, "images")
        self._annotations = _temporary(path, "annotations")
        self._image_count = 0
        self._annotation_count = 0
        self._closed = False

    def __enter__(self) -> CocoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._remove_parts()
        elif not self._closed:
            self.close()

    def add_image(self, file_name: str, width: int, height: int, instances: Sequence[Mapping[str, Any]]) -> int:
        """Append one image and an annotation per instance; returns the image's COCO id (1, 2, ...).

        Raises ValueError, writing nothing, if an instance has no ``rle`` (compressed, ``counts`` a str) of size
        ``[height, width]``.
        """
        if self._closed:
            raise ValueError(f"{self._path} is already closed")
        for index, instance in enumerate(instances):
            rle = instance.get("rle")
            if rle is None:
                raise ValueError(f"{file_name}: instance {index} has no rle mask")
            if not isinstance(rle["counts"], str):
                raise ValueError(f"{file_name}: instance {index} rle counts are not a compressed string")
            if list(rle["size"]) != [height, width]:
                raise ValueError(f"{file_name}: instance {index} mask is {rle['size']}, the image [{height}, {width}]")
        self._image_count += 1
        image_id = self._image_count
        image = {"id": image_id, "file_name": file_name, "width": width, "height": height}
        _append(self._images, image, first=image_id == 1)
        for instance in instances:
            self._annotation_count += 1
            _append(self._annotations, self._annotation(image_id, instance), first=self._annotation_count == 1)
        return image_id

    def close(self) -> CocoStats:
        """Join the parts into ``path`` and remove the temporary files."""
        if self._closed:
            raise ValueError(f"{self._path} is already closed")
        try:
            self._join()
        finally:
            self._remove_parts()
        return CocoStats(self._image_count, self._annotation_count, len(self._categories))

    def _annotation(self, image_id: int, instance: Mapping[str, Any]) -> dict[str, Any]:
        """The category of the instance's label; the detector's confidence, where given, beside the mask's own
        ``score``."""
        label = instance.get("label")
        class_id = instance.get("class_id")
        category_id = self._categories.add(label, int(class_id) if class_id is not None else None)
        box = instance["bbox"]
        rle = instance["rle"]
        extra = {"detection_confidence": instance["detection_confidence"]} if "detection_confidence" in instance else {}
        return {
            "id": self._annotation_count,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": {"size": list(rle["size"]), "counts": rle["counts"]},
            "area": float(instance["area"]),
            "bbox": [box["x0"], box["y0"], box["x1"] - box["x0"], box["y1"] - box["y0"]],
            "iscrowd": 0,
            "score": instance["score"],
        } | extra

    def _join(self) -> None:
        info = {"description": "samq", "date_created": datetime.now(tz=UTC).isoformat()}
        categories = [
            {"id": entry.pop("id"), "name": entry.pop("name"), "supercategory": DEFAULT_CATEGORY} | entry
            for entry in self._categories.entries()
        ]
        final = _temporary(self._path, "json")
        try:
            with final:
                final.write(f'{{"info":{json.dumps(info)},"licenses":[],"images":[')
                _copy(self._images, final)
                final.write('],"annotations":[')
                _copy(self._annotations, final)
                final.write(f'],"categories":{json.dumps(categories)}}}\n')
            os.replace(final.name, self._path)
        except BaseException:
            Path(final.name).unlink(missing_ok=True)
            raise

    def _remove_parts(self) -> None:
        """Close and delete the temporary files; the writer takes no more images."""
        for part in (self._images, self._annotations):
            part.close()
            Path(part.name).unlink(missing_ok=True)
        self._closed = True


def _temporary(path: Path, suffix: str) -> IO[str]:
    """A named temporary text file beside ``path`` (same filesystem, so the final rename is atomic)."""
    return tempfile.NamedTemporaryFile(
        "w+", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", suffix=f".{suffix}", delete=False
    )


def _append(part: IO[str], record: Mapping[str, Any], *, first: bool) -> None:
    if not first:
        part.write(",\n")
    part.write(json.dumps(record, separators=(",", ":")))


def _copy(part: IO[str], final: IO[str]) -> None:
    part.flush()
    part.seek(0)
    shutil.copyfileobj(part, final)
