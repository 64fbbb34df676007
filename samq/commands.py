"""The client commands ``samq submit`` (one image) and ``samq wait``, and the prompt options they share with
``samq batch`` and ``samq demo``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from samq.client import Client
from samq.jobs import Job
from samq.progress import JobProgress


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit code 2)."""


def geometry_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--point", action="append", default=[], help="a point prompt x,y (positive) or x,y,neg (repeatable)"
    )
    parser.add_argument("--box", help="a box prompt x0,y0,x1,y1 in pixels of the original image")


def cmd_submit(args: argparse.Namespace) -> int:
    client = Client(args.url, args.api_key)
    job = client.submit(segment_job(args, client.media(args.image)))
    print(f"submitted {job.id} ({client.base_url}/v1/jobs/{job.id})", flush=True)
    if not args.wait:
        return 0
    return follow(job)


def cmd_wait(args: argparse.Namespace) -> int:
    return follow(Client(args.url, args.api_key).get(args.job_id))


def segment_job(args: argparse.Namespace, image: dict[str, Any]) -> dict[str, Any]:
    return {"type": "segment", "model": args.model, "image": image, "prompts": [prompt_of(args)]}


def prompt_of(args: argparse.Namespace) -> dict[str, Any]:
    """--point/--box as one prompt (a segment prompt, or a tracked object's seed)."""
    prompt: dict[str, Any] = {"points": [_point(p) for p in args.point]}
    if args.box:
        try:
            x0, y0, x1, y1 = (float(v) for v in args.box.split(","))
        except ValueError as e:
            raise UsageError(f"--box {args.box!r}: expected x0,y0,x1,y1") from e
        prompt["box"] = {"x0": x0, "y0": y0, "x1": x1, "y1": y1}
    return prompt


def _point(text: str) -> dict[str, Any]:
    parts = text.split(",")
    try:
        if len(parts) < 2 or parts[2:] not in ([], ["pos"], ["neg"]):
            raise ValueError(text)
        return {"x": float(parts[0]), "y": float(parts[1]), "positive": parts[2:] != ["neg"]}
    except ValueError as e:
        raise UsageError(f"--point {text!r}: expected x,y or x,y,neg") from e


def follow(job: Job) -> int:
    """Wait for the job with a progress display on stderr, then print its outcome, files and viewer page."""
    with JobProgress(sys.stderr) as display:
        job.wait(on_update=display.update)
    print(f"{job.id}: {job.status}", flush=True)
    if job.status != "succeeded":
        print(json.dumps(job["error"] or {"status": job.status}, indent=2), file=sys.stderr)
        return 1
    result = job["result"]
    print(f"result: {result['url']}")
    for file in result["files"]:
        print(f"  {file['name']} ({file['bytes']} bytes): {file['url']}")
    print(f"summary: {json.dumps(result['summary'])}")
    if job.view_url:
        print(f"view: {job.view_url}")
    return 0
