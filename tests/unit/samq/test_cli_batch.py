"""``samq batch``'s pure pieces: the files it takes, the uploads and manifest, the request built from the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from samq.batch import batch_job, batch_template, media_files, upload_inputs
from samq.cli import build_parser, main
from samq.client import Client
from samq.commands import UsageError
from samq.progress import ProgressDisplay


def args(*argv: str):
    return build_parser().parse_args(["batch", *argv])


def touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


class FakeClient(Client):
    """A client whose uploads stay in memory (nothing else is called)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9")
        self.uploads: list[tuple[bytes, str]] = []

    def upload(self, data: bytes, content_type: str = "application/octet-stream") -> dict[str, Any]:
        self.uploads.append((data, content_type))
        return {"id": f"upl_{len(self.uploads)}"}


def test_media_files_walks_sorted_recursively_skipping_other_and_hidden_files(tmp_path: Path) -> None:
    touch(
        tmp_path, "b.PNG", "a/z.jpg", "a/b/c.webp", "notes.txt", "clip.mp4", ".hidden.jpg", ".cache/x.jpg", "a/._y.jpg"
    )
    files, video = media_files(tmp_path, video=False)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a/b/c.webp", "a/z.jpg", "b.PNG"]
    assert not video
    files, video = media_files(tmp_path, video=True)
    assert [p.name for p in files] == ["clip.mp4"]
    assert video


def test_a_directory_of_only_videos_is_a_video_batch(tmp_path: Path) -> None:
    touch(tmp_path, "x/2.mov", "1.mp4", "readme.md")
    files, video = media_files(tmp_path, video=False)
    assert video
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["1.mp4", "x/2.mov"]


def test_no_media_or_no_directory_is_a_usage_error(tmp_path: Path) -> None:
    touch(tmp_path, "notes.txt")
    with pytest.raises(UsageError, match="no media files"):
        media_files(tmp_path, video=False)
    with pytest.raises(UsageError, match="not a directory"):
        media_files(tmp_path / "missing", video=False)


def test_manifest_names_each_upload_by_its_relative_posix_path(tmp_path: Path) -> None:
    touch(tmp_path, "cars/red/1.jpg", "cars/2.png", "skip.txt")
    files, _ = media_files(tmp_path, video=False)
    client = FakeClient()
    inputs = upload_inputs(client, tmp_path, files, ProgressDisplay(io.StringIO()))
    assert [content_type for _, content_type in client.uploads] == ["image/png", "image/jpeg", "application/x-ndjson"]
    assert inputs == {"manifest": {"upload": "upl_3"}}
    lines = client.uploads[-1][0].decode().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"upload": "upl_1", "name": "cars/2.png"},
        {"upload": "upl_2", "name": "cars/red/1.jpg"},
    ]


def test_text_on_images_is_a_concept_batch_exporting_coco() -> None:
    a = args("s3://bucket/cars/", "--text", "red car", "--text", "truck", "--threshold", "0.4")
    template = batch_template(a, video=False)
    assert template == {
        "type": "concept",
        "model": "sam3",
        "prompts": [{"text": "red car"}, {"text": "truck"}],
        "threshold": 0.4,
    }
    assert batch_job(a, template, {"s3_prefix": a.source}) == {
        "type": "batch",
        "template": template,
        "inputs": {"s3_prefix": "s3://bucket/cars/"},
        "max_failure_rate": 0.05,
        "export": ["coco"],
    }


def test_box_and_points_on_images_is_a_segment_batch() -> None:
    a = args("imgs", "--box", "1,2,30,40", "--point", "5,6", "--point", "7,8,neg", "--max-failure-rate", "0.2")
    template = batch_template(a, video=False)
    assert template == {
        "type": "segment",
        "model": "sam2.1_hiera_tiny",
        "prompts": [
            {
                "points": [{"x": 5.0, "y": 6.0, "positive": True}, {"x": 7.0, "y": 8.0, "positive": False}],
                "box": {"x0": 1.0, "y0": 2.0, "x1": 30.0, "y1": 40.0},
            }
        ],
    }
    job = batch_job(a, template, {"manifest": {"upload": "upl_1"}})
    assert job["max_failure_rate"] == 0.2
    assert job["export"] == ["coco"]
    assert batch_job(args("imgs", "--box", "1,2,3,4", "--no-export"), template, {})["export"] == []


def test_a_box_on_videos_tracks_one_object_seeded_on_the_first_frame_without_export() -> None:
    a = args("s3://bucket/clips/", "--video", "--box", "1,2,30,40")
    template = batch_template(a, video=True)
    assert template == {
        "type": "track",
        "model": "sam2.1_hiera_small",
        "objects": [{"id": 1, "frame": 0, "points": [], "box": {"x0": 1.0, "y0": 2.0, "x1": 30.0, "y1": 40.0}}],
    }
    assert batch_job(a, template, {"s3_prefix": a.source})["export"] == []
    assert batch_template(args("d", "--point", "3,4", "--model", "sam3_tracker"), video=True)["model"] == "sam3_tracker"


def test_text_on_videos_tracks_the_concepts_with_sam3() -> None:
    template = batch_template(args("clips", "--text", "red car", "--text", "dog"), video=True)
    assert template == {"type": "track", "model": "sam3", "concepts": ["red car", "dog"]}


def test_everything_on_images_prelabels_every_mask_exporting_coco() -> None:
    a = args("imgs", "--everything")
    template = batch_template(a, video=False)
    assert template == {"type": "everything", "model": "sam2.1_hiera_tiny"}
    assert batch_job(a, template, {"manifest": {"upload": "upl_1"}})["export"] == ["coco"]


@pytest.mark.parametrize(
    ("argv", "video", "message"),
    [
        ((), False, "give --text"),
        (("--text", "car", "--box", "1,2,3,4"), False, "one of them"),
        (("--everything", "--text", "car"), False, "--everything takes images and no prompt"),
        (("--everything",), True, "--everything takes images"),
        (("--box", "1,2,3,4", "--threshold", "0.3"), False, "--threshold"),
        (("--text", "car", "--threshold", "0.3"), True, "--threshold"),
        (
            (
                "--box",
                "1,2,3",
            ),
            False,
            "--box",
        ),
        (("--point", "1,2,maybe"), False, "--point"),
    ],
)
def test_bad_prompts_are_usage_errors(argv: tuple[str, ...], video: bool, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        batch_template(args("d", *argv), video=video)


def test_usage_errors_exit_2_before_anything_is_uploaded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["batch", str(tmp_path), "--text", "car", "--url", "http://127.0.0.1:9"]) == 2
    assert "no media files" in capsys.readouterr().err
    touch(tmp_path, "a.jpg")
    assert main(["batch", str(tmp_path), "--url", "http://127.0.0.1:9"]) == 2
    assert "give --text" in capsys.readouterr().err
