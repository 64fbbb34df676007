"""Category tables fixed by the prompts (COCO exports that merge) and annotated.png, through the whole stack."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from PIL import Image
from pycocotools.coco import COCO

from storage import keys
from tests.support.images import b64, png_bytes, scene
from tests.support.results import download, files_of
from tests.support.stack import Stack

BOX = {"x0": 10, "y0": 8, "x1": 60, "y1": 50}
TENANT = "default"  # the open server's one tenant


def concept_batch(uploads: list[str], nothing: float) -> dict[str, Any]:
    """Phrases "dog" and an exemplar that find nothing when ``nothing`` is 1.0, "red car" that finds something
    (with random weights every one of the shrunk decoder's 32 queries scores above 0); the last item brings its
    own phrase ("bike", also ``nothing``)."""
    template = {
        "type": "concept",
        "prompts": [
            {"text": "dog", "threshold": nothing},
            {"text": "red car", "threshold": 0.0},
            {"boxes": [BOX], "threshold": nothing},
        ],
    }
    items: list[dict[str, Any]] = [{"upload": u, "name": f"{i}.png"} for i, u in enumerate(uploads)]
    items[-1]["prompts"] = [{"text": "bike", "threshold": nothing}, {"text": "red car", "threshold": 0.0}]
    return {"type": "batch", "template": template, "inputs": {"items": items}, "export": ["coco"]}


def test_two_concept_batches_with_the_same_prompts_export_the_same_categories(
    local_stack: Stack, tmp_path: Path
) -> None:
    client = local_stack.client
    uploads = [client.upload(png_bytes(scene(96, 80, seed=i)), "image/png")["id"] for i in range(3)]
    matched = client.submit(concept_batch(uploads, nothing=0.0))
    unmatched = client.submit(concept_batch(uploads, nothing=1.0))
    exports = []
    for job in (matched, unmatched):
        done = client.wait(job["id"], timeout=300)
        assert done["status"] == "succeeded", done["error"]
        path = tmp_path / f"{job['id']}.json"
        path.write_bytes(download(files_of(done)["coco.json"]))
        exports.append((job["id"], COCO(str(path))))

    expected = [
        {"id": 1, "name": "dog", "supercategory": "object"},
        {"id": 2, "name": "red car", "supercategory": "object"},
        {"id": 3, "name": "object", "supercategory": "object"},
        {"id": 4, "name": "bike", "supercategory": "object"},  # the last item's own new phrase, after the template's
    ]
    (_, all_matched), (unmatched_id, some_matched) = exports
    assert all_matched.dataset["categories"] == some_matched.dataset["categories"] == expected
    assert {a["category_id"] for a in all_matched.anns.values()} == {1, 2, 3, 4}
    assert {a["category_id"] for a in some_matched.anns.values()} == {2}  # only "red car" found anything
    assert len(some_matched.imgs) == 3 and len(some_matched.anns) == 3 * 32

    # each item's result.json lists its own job's table, and every instance's category in it
    first = client.request("GET", f"/v1/jobs/{unmatched_id}/items/0")
    assert first["categories"] == [{"id": 1, "name": "dog"}, {"id": 2, "name": "red car"}, {"id": 3, "name": "object"}]
    assert [(i["label"], i["category_id"]) for i in first["instances"]] == [("red car", 2)] * 32
    last = client.request("GET", f"/v1/jobs/{unmatched_id}/items/2")
    assert last["categories"] == [{"id": 1, "name": "bike"}, {"id": 2, "name": "red car"}]
    assert {i["category_id"] for i in last["instances"]} == {2}


def test_a_segment_job_with_annotated_lists_annotated_png_at_the_images_size(local_stack: Stack) -> None:
    client = local_stack.client
    image = scene(120, 90, seed=4)
    body = {
        "type": "segment",
        "image": {"base64": b64(png_bytes(image))},
        "prompts": [{"box": BOX, "points": [{"x": 30, "y": 30}, {"x": 100, "y": 80, "positive": False}]}],
        "output": {"annotated": True},
    }
    done = client.submit(body, wait=60)
    assert done["status"] == "succeeded", done["error"]

    drawn = Image.open(io.BytesIO(download(files_of(done)["annotated.png"])))
    assert (drawn.format, drawn.size) == ("PNG", (120, 90))
    assert drawn.convert("RGB") != Image.fromarray(image), "something is drawn"
    document = client.result(done["id"])
    assert document["categories"] == [{"id": 1, "name": "object"}]
    assert document["instances"][0]["category_id"] == 1

    plain = client.submit({**body, "output": {}}, wait=60)
    assert "annotated.png" not in files_of(plain)


def test_each_batch_item_writes_its_annotated_png_in_its_folder(local_stack: Stack) -> None:
    client = local_stack.client
    sizes = [(96, 64), (80, 80)]
    uploads = [client.upload(png_bytes(scene(w, h, seed=i)), "image/png")["id"] for i, (w, h) in enumerate(sizes)]
    template = {"type": "segment", "prompts": [{"box": BOX, "label": "thing"}], "output": {"annotated": True}}
    body = {"type": "batch", "template": template, "inputs": {"items": [{"upload": u} for u in uploads]}}
    done = client.wait(client.submit(body)["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]

    index = [json.loads(line) for line in download(files_of(done)["items.jsonl"]).splitlines()]
    for i, line in enumerate(index):
        name = f"items/{i:06d}/annotated.png"
        assert name in line["files"]
        drawn = Image.open(io.BytesIO(local_stack.objects.get(keys.job_file(TENANT, done["id"], name))))
        assert drawn.size == sizes[i]
