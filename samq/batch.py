"""``samq batch``: one prompt over a directory of images or videos (or an ``s3://`` prefix): uploads, a progress
line, and the result files downloaded at the end."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from samq.client import Client
from samq.commands import UsageError, prompt_of
from samq.jobs import Job
from samq.media import content_type_of
from samq.progress import JobProgress, ProgressDisplay
from tasks.names import IMAGE_EXTENSIONS, RESULT_DOCUMENT, VIDEO_EXTENSIONS


def cmd_batch(args: argparse.Namespace) -> int:
    s3 = args.source.startswith("s3://")
    root = Path(args.source)
    files, video = ([], args.video) if s3 else media_files(root, args.video)
    template = batch_template(args, video)  # before any upload: a bad prompt costs nothing
    client = Client(args.url, args.api_key)
    if s3:
        inputs = {"s3_prefix": args.source}
    else:
        with ProgressDisplay(sys.stderr) as display:
            inputs = upload_inputs(client, root, files, display)
    job = client.submit(batch_job(args, template, inputs))
    if args.no_wait:
        print(job["id"])
        return 0
    print(f"submitted {job.id}", flush=True)
    if job.view_url:
        print(f"view: {job.view_url}", flush=True)
    try:
        with JobProgress(sys.stderr) as display:
            job.wait(interval=0.5, on_update=display.update)
    except KeyboardInterrupt:
        print(f"\njob continues on the server: samq wait {job['id']}", file=sys.stderr)
        return 130
    return _batch_outcome(client, job, args.out or Path(f"samq-batch-{job['id']}"))


def media_files(root: Path, video: bool) -> tuple[list[Path], bool]:
    """The images (or videos) under ``root``, recursively, sorted by relative path, hidden files skipped; and
    whether they are videos: with ``video``, or when ``root`` holds videos and no images."""
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory (nor an s3:// prefix)")
    found = sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    images = [p for _, p in found if p.suffix.lower() in IMAGE_EXTENSIONS]
    videos = [p for _, p in found if p.suffix.lower() in VIDEO_EXTENSIONS]
    video = video or (not images and bool(videos))
    if not (videos if video else images):
        kinds = VIDEO_EXTENSIONS if video else IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
        raise UsageError(f"{root}: no media files ({' '.join(sorted(kinds))})")
    return (videos if video else images), video


def batch_template(args: argparse.Namespace, video: bool) -> dict[str, Any]:
    """The job each item runs, from --text (concepts), --box/--point (visual prompts) or --everything (every mask, no
    prompt), for images or videos."""
    if args.everything:
        if args.text or args.box or args.point or video:
            raise UsageError("batch: --everything takes images and no prompt (no --text, --box, --point or videos)")
        return {"type": "everything", "model": args.model or "sam2.1_hiera_tiny"}
    if bool(args.text) == bool(args.box or args.point):
        raise UsageError("batch: give --text PHRASE, --box/--point or --everything (one of them)")
    if args.threshold is not None and (video or not args.text):
        raise UsageError("batch: --threshold applies to --text on images")
    if args.text and video:
        return {"type": "track", "model": args.model or "sam3", "concepts": args.text}
    if args.text:
        threshold = {} if args.threshold is None else {"threshold": args.threshold}
        return {
            "type": "concept",
            "model": args.model or "sam3",
            "prompts": [{"text": t} for t in args.text],
            **threshold,
        }
    if video:
        return {
            "type": "track",
            "model": args.model or "sam2.1_hiera_small",
            "objects": [{"id": 1, "frame": 0, **prompt_of(args)}],
        }
    return {"type": "segment", "model": args.model or "sam2.1_hiera_tiny", "prompts": [prompt_of(args)]}


def batch_job(args: argparse.Namespace, template: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The batch request; COCO export unless --no-export or tracking (track results are per video)."""
    export = [] if args.no_export or template["type"] == "track" else ["coco"]
    return {
        "type": "batch",
        "template": template,
        "inputs": inputs,
        "max_failure_rate": args.max_failure_rate,
        "export": export,
    }


def upload_inputs(client: Client, root: Path, files: list[Path], display: ProgressDisplay) -> dict[str, Any]:
    """Upload every file, then a JSONL manifest naming each by its posix path relative to ``root``."""
    lines = []
    display.show("upload", "uploading", 0, len(files), "files")
    for done, path in enumerate(files, 1):
        upload = client.upload(path.read_bytes(), content_type_of(path))
        lines.append(json.dumps({"upload": upload["id"], "name": path.relative_to(root).as_posix()}) + "\n")
        display.show("upload", "uploading", done, len(files), "files")
    manifest = client.upload("".join(lines).encode(), "application/x-ndjson")
    return {"manifest": {"upload": manifest["id"]}}


def _batch_outcome(client: Client, job: Job, out: Path) -> int:
    """Print the outcome and download the result files worth having locally (a failed batch's too)."""
    print(f"{job['id']}: {job['status']}")
    if job["error"]:
        print(f"error: {job['error']['code']}: {job['error']['message']}", file=sys.stderr)
    result = job["result"] or {"files": []}
    if "summary" in result:
        print(f"summary: {json.dumps(result['summary'])}")
    files = {file["name"]: file for file in result["files"]}
    for name in (RESULT_DOCUMENT, "items.jsonl", "coco.json"):  # result.json lists every failure
        if name in files:
            out.mkdir(parents=True, exist_ok=True)
            client.download(files[name]["url"], out / name)
            print(f"  {out / name}")
    return 0 if job["status"] == "succeeded" else 1
